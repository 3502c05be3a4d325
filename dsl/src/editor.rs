//! Syntax highlighting for `.ovl` files in editors, generated from the
//! language's own grammar so that the two cannot drift apart.
//!
//! One description (`Syntax`, built by `syntax()`) is written out twice:
//! as a TextMate grammar ([`textmate`], JSON, for VS Code and every editor
//! that reads TextMate grammars) and as a Sublime Text syntax
//! ([`sublime_syntax`], YAML, also read by every tool built on the same
//! engine). The keyword lists in it are taken from `grammar.pest` itself:
//! the literals of the `kw_*` rules and of the other one-word rules (flags
//! such as `readonly`, results such as `ok`), the first words of statements
//! (the `&"..."` guards of `stmt` and `op`) and of each kind of block's
//! items, and the comparison operators of `cmp_op`; errno names and `open`
//! flags come from [`crate::errno::TABLE`] and [`crate::ast::OpenFlag`]. A
//! keyword added to the grammar reaches the editors with the next
//! regeneration (the checked-in files are compared with this output by
//! `dsl/tests/editors.rs`, which rewrites them with `OVLC_UPDATE_EDITORS=1`).
//!
//! Highlighting works line by line, as both kinds of editor do: a statement
//! is known by its first word, at the start of a line or after a `{`. A
//! first word that starts no statement (or, inside a `layer`, `edit` or
//! `expect` block, no item of that block) is marked `invalid.illegal`, and
//! so are a `"` string not closed on its line, an unknown escape and a
//! result after `=>` that no errno or result word can be. The regular
//! expressions keep to what the regex engines of both kinds of editor
//! understand alike: classes, alternation, fixed-length look-around (no
//! `\h`, no possessive quantifiers, no variable-length look-behind).

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The grammar the keywords are taken from.
const GRAMMAR: &str = include_str!("grammar.pest");

/// The TextMate scope name of the language.
pub const SCOPE: &str = "source.ovl";

// ------------------------------------------------------------------ scopes

const S_COMMENT: &str = "comment.line.number-sign.ovl";
const S_COMMENT_PUNCT: &str = "punctuation.definition.comment.ovl";
const S_STRING: &str = "string.quoted.double.ovl";
const S_TRIPLE: &str = "string.quoted.triple.ovl";
const S_STRING_BEGIN: &str = "punctuation.definition.string.begin.ovl";
const S_STRING_END: &str = "punctuation.definition.string.end.ovl";
const S_ESCAPE: &str = "constant.character.escape.ovl";
const S_BAD_ESCAPE: &str = "invalid.illegal.escape.ovl";
const S_UNTERMINATED: &str = "invalid.illegal.unterminated-string.ovl";
const S_CONTROL: &str = "keyword.control.ovl";
const S_HEADER: &str = "keyword.other.header.ovl";
const S_STATEMENT: &str = "keyword.other.ovl";
const S_OPERATION: &str = "support.function.ovl";
const S_ENTRY: &str = "keyword.other.entry.ovl";
const S_CHECK: &str = "keyword.other.check.ovl";
const S_LOGICAL: &str = "keyword.operator.logical.ovl";
const S_FLAG: &str = "storage.modifier.ovl";
const S_OPEN_FLAG: &str = "storage.modifier.open-flag.ovl";
const S_BAD_STATEMENT: &str = "invalid.illegal.statement.ovl";
const S_BAD_ITEM: &str = "invalid.illegal.item.ovl";
const S_RESULT_OP: &str = "keyword.operator.result.ovl";
const S_RESULT: &str = "constant.language.ovl";
const S_ERRNO: &str = "constant.other.errno.ovl";
const S_BAD_RESULT: &str = "invalid.illegal.result.ovl";
const S_QUESTION: &str = "keyword.operator.question.ovl";
const S_ALTERNATION: &str = "punctuation.separator.alternation.ovl";
const S_ARROW: &str = "keyword.operator.arrow.ovl";
const S_COMPARISON: &str = "keyword.operator.comparison.ovl";
const S_ASSIGN: &str = "keyword.operator.assignment.ovl";
const S_DATA_LAYERS: &str = "punctuation.separator.data-layers.ovl";
const S_PATH: &str = "string.unquoted.path.ovl";
const S_OPTION: &str = "variable.parameter.option.ovl";
const S_VALUE: &str = "constant.other.value.ovl";
const S_XATTR: &str = "entity.other.attribute-name.xattr.ovl";
const S_TAG: &str = "entity.name.tag.ovl";
const S_NAME_PUNCT: &str = "punctuation.definition.variable.ovl";
const S_NAME: &str = "variable.other.name.ovl";
const S_INODE_FLAG: &str = "constant.other.inode-flag.ovl";
const S_MODE: &str = "constant.numeric.mode.ovl";
const S_NUMBER: &str = "constant.numeric.ovl";
const S_BLOCK_BEGIN: &str = "punctuation.section.block.begin.ovl";
const S_BLOCK_END: &str = "punctuation.section.block.end.ovl";
const S_LIST_BEGIN: &str = "punctuation.section.brackets.begin.ovl";
const S_LIST_END: &str = "punctuation.section.brackets.end.ovl";
const S_PARENS_BEGIN: &str = "punctuation.section.parens.begin.ovl";
const S_PARENS_END: &str = "punctuation.section.parens.end.ovl";
const S_COMMA: &str = "punctuation.separator.comma.ovl";

// ------------------------------------------------------- which words are which
//
// These lists only choose colours among words the grammar defines; a word
// listed here that the grammar lacks is simply not used (a unit test below
// keeps them in step with the grammar).

/// Statements that steer others: `keyword.control`.
const CONTROL: &[&str] = &["if", "else", "as", "on", "requires"];
/// Header statements: `keyword.other.header`.
const HEADER: &[&str] = &["scenario", "about", "tags", "vary", "param", "backing"];
/// Conditions' operators: `keyword.operator.logical`.
const LOGICAL: &[&str] = &["and", "or", "not"];
/// One-word rules, besides `kw_*`, whose words are clause keywords rather than flags.
const KEYWORD_RULES: &[&str] = &["tree_target"];
/// The statements that open a block of items of their own, with the block's
/// rule: `expect` followed by a word picks a block by that word.
const LAYER_BLOCK: (&str, &str) = ("layer", "layer_body");
const EDIT_BLOCK: (&str, &str) = ("edit", "edit_body");
const EXPECT: &str = "expect";
const EXPECT_BLOCK: &str = "check_block";
const EXPECT_BY_WORD: &[(&str, &str)] = &[("layer", "tar_block"), ("mountinfo", "mountinfo_block")];
/// The rules that list statements' first words (`&"word" ~ ...`), and the literals of `op_start`.
const STATEMENT_RULE: &str = "stmt";
const OPERATION_RULES: &[&str] = &["op", "op_start"];
/// The word before an `open` flag list's name (`open PATH as F rdonly|directory`).
const OPEN_AS: &str = "as";
/// The word before a mount's options (`with OPT, OPT=VALUE`).
const WITH: &str = "with";
/// The header statement whose words are tags.
const TAGS: &str = "tags";
/// The rule that holds the results after `=>`.
const RESULT_RULE: &str = "result";
/// The comparison operators.
const COMPARISON_RULE: &str = "cmp_op";

// ------------------------------------------------------------ regular pieces

/// A character of an identifier (the grammar's `ident_char`).
const IDENT_CHAR: &str = "[A-Za-z0-9_-]";
/// Where a statement may start: at the start of a line, or after a `{` (a
/// block on one line).
const LINE_START: &str = r"(?:^|(?<=\{))[ \t]*";

fn word_start() -> String {
    format!("(?<!{IDENT_CHAR})")
}

fn word_end() -> String {
    format!("(?!{IDENT_CHAR})")
}

/// An alternation of literal words, longest first.
fn alternation<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> String {
    let mut list: Vec<String> = words.into_iter().map(|w| escape_regex(w.as_ref())).collect();
    list.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    list.dedup();
    list.join("|")
}

fn escape_regex(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `(?<!ident)(a|b|c)(?!ident)`: whole words, captured as group 1.
fn words_re(words: &[String]) -> String {
    format!("{}({}){}", word_start(), alternation(words), word_end())
}

/// A statement's first word, captured as group 1.
fn first_word_re(words: &[String]) -> String {
    format!("{LINE_START}({}){}", alternation(words), word_end())
}

// ------------------------------------------------------------ the grammar's words

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Str(String),
    Ident(String),
    Punct(char),
}

#[derive(Debug)]
struct PestRule {
    name: String,
    body: Vec<Tok>,
}

/// The tokens of a pest grammar: string and character literals, identifiers, punctuation.
fn tokenize(src: &str) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                    s.push(match chars[i] {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        '0' => '\0',
                        other => other,
                    });
                } else {
                    s.push(chars[i]);
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// The rules of a pest grammar: `name = modifier? { body }`.
fn parse_rules(src: &str) -> Vec<PestRule> {
    let toks = tokenize(src);
    let mut rules = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let Tok::Ident(name) = &toks[i] else {
            i += 1;
            continue;
        };
        if toks.get(i + 1) != Some(&Tok::Punct('=')) {
            i += 1;
            continue;
        }
        let mut j = i + 2;
        // A modifier: `_` (an identifier to the tokenizer), `@`, `$`, `!`.
        if matches!(toks.get(j), Some(Tok::Punct('@' | '$' | '!'))) || toks.get(j) == Some(&Tok::Ident("_".into())) {
            j += 1;
        }
        if toks.get(j) != Some(&Tok::Punct('{')) {
            i += 1;
            continue;
        }
        let mut depth = 0usize;
        let mut k = j;
        while k < toks.len() {
            match toks[k] {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        rules.push(PestRule { name: name.clone(), body: toks[j + 1..k.min(toks.len())].to_vec() });
        i = k + 1;
    }
    rules
}

/// The words a one-word rule matches: `"w" ~ !ident_char` or `("a" | "b") ~ !ident_char`.
fn one_word_rule(body: &[Tok]) -> Option<Vec<String>> {
    let tail = [Tok::Punct('~'), Tok::Punct('!'), Tok::Ident("ident_char".into())];
    let head = body.strip_suffix(&tail[..])?;
    match head {
        [Tok::Str(w)] => Some(vec![w.clone()]),
        [Tok::Punct('('), inner @ .., Tok::Punct(')')] => {
            let mut words = Vec::new();
            for (n, t) in inner.iter().enumerate() {
                match (n % 2, t) {
                    (0, Tok::Str(w)) => words.push(w.clone()),
                    (1, Tok::Punct('|')) => {}
                    _ => return None,
                }
            }
            Some(words)
        }
        _ => None,
    }
}

/// The literals a rule's alternatives are guarded by (`&"word" ~ ...`).
fn guards(body: &[Tok]) -> Vec<String> {
    body.windows(2)
        .filter_map(|w| match w {
            [Tok::Punct('&'), Tok::Str(s)] => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn refs(body: &[Tok]) -> impl Iterator<Item = &str> {
    body.iter().filter_map(|t| match t {
        Tok::Ident(s) => Some(s.as_str()),
        _ => None,
    })
}

fn literals(body: &[Tok]) -> Vec<String> {
    body.iter()
        .filter_map(|t| match t {
            Tok::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

struct Pest {
    rules: Vec<PestRule>,
}

impl Pest {
    fn rule(&self, name: &str) -> &PestRule {
        self.rules.iter().find(|r| r.name == name).unwrap_or_else(|| {
            panic!("grammar.pest has no rule `{name}`, which dsl/src/editor.rs reads: update the editor grammar")
        })
    }

    /// The words that may start an item of a rule: its guards and those of
    /// the rules it chooses among, or else the words of its `kw_*` rules
    /// (`mi_check`: `not`, `contains`).
    fn first_words(&self, name: &str) -> Vec<String> {
        let body = &self.rule(name).body;
        let mut out = guards(body);
        if out.is_empty() {
            for r in refs(body).filter(|r| r.starts_with("kw_")) {
                out.extend(one_word_rule(&self.rule(r).body).unwrap_or_default());
            }
        } else {
            for r in refs(body) {
                if r != name && self.rules.iter().any(|x| x.name == r && !guards(&x.body).is_empty()) {
                    out.extend(self.first_words(r));
                }
            }
        }
        out
    }

    /// The first words of the items of a block rule (`"{" ~ line_end* ~ (ITEM ~ ...`).
    fn block_items(&self, block: &str) -> Vec<String> {
        let item = refs(&self.rule(block).body)
            .find(|r| *r != "line_end")
            .unwrap_or_else(|| panic!("grammar.pest's `{block}` names no item rule"))
            .to_string();
        let words = self.first_words(&item);
        assert!(!words.is_empty(), "grammar.pest's `{item}` has no first words");
        sorted(words)
    }
}

fn sorted(words: impl IntoIterator<Item = String>) -> Vec<String> {
    words.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}

fn only(words: &[String], keep: impl Fn(&str) -> bool) -> Vec<String> {
    words.iter().filter(|w| keep(w)).cloned().collect()
}

/// Every word class the description needs, read from the grammar.
#[derive(Debug)]
struct Words {
    statements: Vec<String>,
    operations: Vec<String>,
    keywords: Vec<String>,
    flags: Vec<String>,
    results: Vec<String>,
    comparisons: Vec<String>,
    layer_items: Vec<String>,
    edit_items: Vec<String>,
    check_items: Vec<String>,
    expect_by_word: Vec<(String, Vec<String>)>,
    errnos: Vec<String>,
    open_flags: Vec<String>,
}

fn words() -> Words {
    let pest = Pest { rules: parse_rules(GRAMMAR) };
    let statements = sorted(guards(&pest.rule(STATEMENT_RULE).body));
    let mut operations = BTreeSet::new();
    for r in OPERATION_RULES {
        let body = &pest.rule(r).body;
        operations.extend(guards(body));
        if guards(body).is_empty() {
            operations.extend(literals(body));
        }
    }
    let result_rules: BTreeSet<&str> = refs(&pest.rule(RESULT_RULE).body).collect();
    let (mut keywords, mut flags, mut results) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for r in &pest.rules {
        let Some(ws) = one_word_rule(&r.body) else { continue };
        if r.name.starts_with("kw_") || KEYWORD_RULES.contains(&r.name.as_str()) {
            keywords.extend(ws);
        } else if result_rules.contains(r.name.as_str()) {
            results.extend(ws);
        } else {
            flags.extend(ws);
        }
    }
    let flags = flags.difference(&keywords).cloned().collect();
    for w in [LAYER_BLOCK.0, EDIT_BLOCK.0, EXPECT] {
        assert!(statements.iter().any(|s| s == w), "grammar.pest's `stmt` has no `{w}`");
    }
    let w = Words {
        statements,
        operations: operations.into_iter().collect(),
        keywords: keywords.into_iter().collect(),
        flags,
        results: results.into_iter().collect(),
        comparisons: literals(&pest.rule(COMPARISON_RULE).body),
        layer_items: pest.block_items(LAYER_BLOCK.1),
        edit_items: pest.block_items(EDIT_BLOCK.1),
        check_items: pest.block_items(EXPECT_BLOCK),
        expect_by_word: EXPECT_BY_WORD.iter().map(|(w, b)| (w.to_string(), pest.block_items(b))).collect(),
        errnos: crate::errno::TABLE.iter().map(|(n, _)| n.to_string()).collect(),
        open_flags: crate::ast::OpenFlag::ALL.iter().map(|f| f.name().to_string()).collect(),
    };
    for (what, list) in [("statements", &w.statements), ("operations", &w.operations), ("keywords", &w.keywords)] {
        assert!(!list.is_empty(), "no {what} found in grammar.pest");
    }
    w
}

// ------------------------------------------------------------ the description

/// One rule of a highlighting grammar.
#[derive(Clone, Debug)]
enum Pattern {
    /// A match: the scope of the whole (capture 0) and of groups.
    Match { regex: String, captures: Vec<(usize, &'static str)> },
    /// From `begin` to `end`, with patterns of its own in between; `scope`
    /// covers both ends, `content` only what lies between.
    Region {
        id: &'static str,
        begin: String,
        begin_captures: Vec<(usize, &'static str)>,
        end: String,
        end_captures: Vec<(usize, &'static str)>,
        scope: Option<&'static str>,
        content: Option<&'static str>,
        patterns: Vec<Pattern>,
    },
    /// The patterns of a named group.
    Include(&'static str),
}

fn m(regex: impl Into<String>, scope: &'static str) -> Pattern {
    Pattern::Match { regex: regex.into(), captures: vec![(0, scope)] }
}

fn mc(regex: impl Into<String>, captures: &[(usize, &'static str)]) -> Pattern {
    Pattern::Match { regex: regex.into(), captures: captures.to_vec() }
}

fn inc(name: &'static str) -> Pattern {
    Pattern::Include(name)
}

/// The highlighting grammar: the top-level patterns and named groups.
#[derive(Debug)]
struct Syntax {
    main: Vec<Pattern>,
    repository: Vec<(&'static str, Vec<Pattern>)>,
}

/// A statement that opens a block of items (`layer`, `edit`, `expect`):
/// the statement's line up to its block, the block, and the line's end.
fn block_statement(
    id: &'static str,
    block_id: &'static str,
    begin: String,
    begin_captures: &[(usize, &'static str)],
    items: &[String],
    item_scope: &'static str,
) -> Pattern {
    let block = Pattern::Region {
        id: block_id,
        begin: r"\{".into(),
        begin_captures: vec![(0, S_BLOCK_BEGIN)],
        end: r"\}".into(),
        end_captures: vec![(0, S_BLOCK_END)],
        scope: Some("meta.block.ovl"),
        content: None,
        patterns: vec![
            inc("comment"),
            mc(first_word_re(items), &[(1, item_scope)]),
            mc(format!(r"{LINE_START}([^\s#{{}}][^\s#{{}}]*)"), &[(1, S_BAD_ITEM)]),
            inc("tokens"),
        ],
    };
    Pattern::Region {
        id,
        begin,
        begin_captures: begin_captures.to_vec(),
        // After the block's `}`, or at the end of a line without a block.
        end: r"(?<=\})|$".into(),
        end_captures: vec![],
        scope: None,
        content: None,
        patterns: vec![block, inc("tokens")],
    }
}

fn syntax(w: &Words) -> Syntax {
    let statements_control = only(&w.statements, |s| CONTROL.contains(&s));
    // `tags` and the statements with blocks of items have regions of their own.
    let own_region = |s: &str| s == TAGS || s == LAYER_BLOCK.0 || s == EDIT_BLOCK.0 || s == EXPECT;
    let statements_header = only(&w.statements, |s| HEADER.contains(&s) && !own_region(s));
    let statements_other = only(&w.statements, |s| !CONTROL.contains(&s) && !HEADER.contains(&s) && !own_region(s));
    let keywords_logical = only(&w.keywords, |s| LOGICAL.contains(&s));
    let keywords_control = only(&w.keywords, |s| CONTROL.contains(&s));
    let keywords_other = only(&w.keywords, |s| !LOGICAL.contains(&s) && !CONTROL.contains(&s));
    let open_flag = alternation(&w.open_flags);
    let expect_begin =
        |word: &str| format!("{LINE_START}({})[ \\t]+({}){}", escape_regex(EXPECT), escape_regex(word), word_end());
    let expect_items = |word: &str| -> Vec<String> {
        w.expect_by_word.iter().find(|(x, _)| x == word).map(|(_, items)| items.clone()).unwrap_or_default()
    };
    let (ws, we) = (word_start(), word_end());

    let mut statements = vec![
        Pattern::Region {
            id: "tags-line",
            begin: first_word_re(&[TAGS.to_string()]),
            begin_captures: vec![(1, S_HEADER)],
            end: r"(?=\})|$".into(),
            end_captures: vec![],
            scope: None,
            content: None,
            patterns: vec![
                inc("comment"),
                m(",", S_COMMA),
                m(format!(r"{IDENT_CHAR}+(?=[\s,#]|$)"), S_TAG),
                m(r"[^\s,#]+", S_BAD_ITEM),
            ],
        },
        block_statement(
            "layer-line",
            "layer-block",
            first_word_re(&[LAYER_BLOCK.0.to_string()]),
            &[(1, S_STATEMENT)],
            &w.layer_items,
            S_ENTRY,
        ),
        block_statement(
            "edit-line",
            "edit-block",
            first_word_re(&[EDIT_BLOCK.0.to_string()]),
            &[(1, S_STATEMENT)],
            &w.edit_items,
            S_ENTRY,
        ),
        block_statement(
            "expect-layer-line",
            "expect-layer-block",
            expect_begin("layer"),
            &[(1, S_STATEMENT), (2, S_STATEMENT)],
            &expect_items("layer"),
            S_ENTRY,
        ),
        block_statement(
            "expect-mountinfo-line",
            "expect-mountinfo-block",
            expect_begin("mountinfo"),
            &[(1, S_STATEMENT), (2, S_STATEMENT)],
            &expect_items("mountinfo"),
            S_CHECK,
        ),
        block_statement(
            "expect-line",
            "expect-block",
            first_word_re(&[EXPECT.to_string()]),
            &[(1, S_STATEMENT)],
            &w.check_items,
            S_CHECK,
        ),
    ];
    for (list, scope) in [
        (&statements_control, S_CONTROL),
        (&statements_header, S_HEADER),
        (&statements_other, S_STATEMENT),
        (&w.operations, S_OPERATION),
    ] {
        if !list.is_empty() {
            statements.push(mc(first_word_re(list), &[(1, scope)]));
        }
    }
    statements.push(mc(format!(r"{LINE_START}([^\s#{{}}][^\s#{{}}]*)"), &[(1, S_BAD_STATEMENT)]));

    let escape = vec![m(r#"\\(?:[ntr0\\"]|x[0-9A-Fa-f]{2})"#, S_ESCAPE), m(r"\\.", S_BAD_ESCAPE)];
    let strings = vec![
        Pattern::Region {
            id: "string-triple",
            begin: "\"\"\"".into(),
            begin_captures: vec![(0, S_STRING_BEGIN)],
            end: "\"\"\"".into(),
            end_captures: vec![(0, S_STRING_END)],
            scope: Some(S_TRIPLE),
            content: None,
            patterns: vec![inc("escape")],
        },
        // A `"` string that does not close on its line.
        m(r#""(?:[^"\\]|\\.)*\\?$"#, S_UNTERMINATED),
        Pattern::Region {
            id: "string-double",
            begin: "\"".into(),
            begin_captures: vec![(0, S_STRING_BEGIN)],
            end: "\"".into(),
            end_captures: vec![(0, S_STRING_END)],
            scope: Some(S_STRING),
            content: None,
            patterns: vec![inc("escape")],
        },
    ];
    let xattr_name = m(format!(r"{ws}(?:trusted|user|security|system)\.[A-Za-z0-9_.@+-]+"), S_XATTR);
    let list = vec![Pattern::Region {
        id: "list-body",
        begin: r"\[".into(),
        begin_captures: vec![(0, S_LIST_BEGIN)],
        end: r"\]".into(),
        end_captures: vec![(0, S_LIST_END)],
        scope: Some("meta.list.ovl"),
        content: None,
        patterns: vec![inc("strings"), m(",", S_COMMA), xattr_name.clone()],
    }];
    let result = vec![Pattern::Region {
        id: "result-body",
        begin: "(=>)".into(),
        begin_captures: vec![(1, S_RESULT_OP)],
        end: r"(?=#|\}|$)".into(),
        end_captures: vec![],
        scope: Some("meta.result.ovl"),
        content: None,
        patterns: vec![
            m(r"\?", S_QUESTION),
            m(words_re(&w.results), S_RESULT),
            m(words_re(&w.errnos), S_ERRNO),
            m(r"\|", S_ALTERNATION),
            inc("strings"),
            inc("list"),
            m(r#"[^\s#}"\[|]+"#, S_BAD_RESULT),
        ],
    }];
    let mut tokens = vec![
        inc("comment"),
        inc("result"),
        inc("strings"),
        inc("list"),
        m("->", S_ARROW),
        m("::", S_DATA_LAYERS),
        m(alternation(&w.comparisons), S_COMPARISON),
        // `as NAME FLAGS` of `open` and `open-handle`.
        mc(
            format!(
                r"{ws}({})[ \t]+([A-Za-z_][A-Za-z0-9_-]*)[ \t]+((?:{open_flag})(?:\|(?:{open_flag}))*)(?![A-Za-z0-9_|-])",
                escape_regex(OPEN_AS)
            ),
            &[(1, S_CONTROL), (3, S_OPEN_FLAG)],
        ),
        // `with OPT, OPT=VALUE, ...`: options up to the next clause.
        Pattern::Region {
            id: "options",
            begin: format!(r"{ws}({})[ \t]+", escape_regex(WITH)),
            begin_captures: vec![(1, S_STATEMENT)],
            end: r"(?=[ \t]*(?:#|\}|$))|(?<![,\s])(?=[ \t]+[^\s,])".into(),
            end_captures: vec![],
            scope: None,
            content: None,
            patterns: vec![
                mc(
                    r#"([A-Za-z0-9_+-]+)(?:(=)((?:(?!=>)[^\s,#()"{}])+))?"#,
                    &[(1, S_OPTION), (2, S_ASSIGN), (3, S_VALUE)],
                ),
                m(",", S_COMMA),
            ],
        },
        // `xattr NAME="value"` in layers and edits.
        mc(r#"([A-Za-z0-9_.@+-]+)(=)(?=")"#, &[(1, S_XATTR), (2, S_ASSIGN)]),
        // `vary NAME=A|B`, `if option NAME=VALUE`, `param NAME=VALUE`.
        mc(
            format!(r#"{ws}([A-Za-z0-9_+-]+)(=)(?!>)((?:(?!=>)[^\s,#()"{{}}])*)"#),
            &[(1, S_OPTION), (2, S_ASSIGN), (3, S_VALUE)],
        ),
        xattr_name,
        m(r##"(?<![^\s:,])/(?:(?!=>|->)[^\s"#,{}\[\]])*"##, S_PATH),
        mc(format!(r"{ws}(@)([A-Za-z_][A-Za-z0-9_-]*)"), &[(1, S_NAME_PUNCT), (2, S_NAME)]),
        m(format!(r"(?<![^\s])[+-][A-Za-z]{we}"), S_INODE_FLAG),
        mc(
            r"(?<![A-Za-z0-9_.@/+-])(?:(0[0-7]{3,})|([0-9]+(?:\.[0-9]+)*(?:[KMG]iB|B|ms|s)?))(?![A-Za-z0-9_.@/+-])",
            &[(1, S_MODE), (2, S_NUMBER)],
        ),
        m(r"(?<![^\s])\?(?![^\s#])", S_QUESTION),
    ];
    for (list, scope) in [
        (&keywords_logical, S_LOGICAL),
        (&keywords_control, S_CONTROL),
        (&keywords_other, S_STATEMENT),
        (&w.flags, S_FLAG),
    ] {
        if !list.is_empty() {
            tokens.push(m(words_re(list), scope));
        }
    }
    tokens.extend([
        m(r"\{", S_BLOCK_BEGIN),
        m(r"\}", S_BLOCK_END),
        m(r"\(", S_PARENS_BEGIN),
        m(r"\)", S_PARENS_END),
        m(",", S_COMMA),
    ]);

    Syntax {
        main: vec![inc("comment"), inc("statements"), inc("tokens")],
        repository: vec![
            ("comment", vec![mc("(#).*", &[(0, S_COMMENT), (1, S_COMMENT_PUNCT)])]),
            ("statements", statements),
            ("tokens", tokens),
            ("result", result),
            ("strings", strings),
            ("escape", escape),
            ("list", list),
        ],
    }
}

// ------------------------------------------------------------ TextMate (JSON)

enum Json {
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

fn s(v: impl Into<String>) -> Json {
    Json::Str(v.into())
}

fn obj(fields: Vec<(&str, Json)>) -> Json {
    Json::Obj(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

impl Json {
    fn write(&self, out: &mut String, indent: usize) {
        let pad = |n: usize| "  ".repeat(n);
        match self {
            Json::Str(v) => {
                out.push('"');
                for c in v.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                out.push_str("[\n");
                for (n, item) in items.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    item.write(out, indent + 1);
                    out.push_str(if n + 1 < items.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push(']');
            }
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Obj(fields) => {
                out.push_str("{\n");
                for (n, (k, v)) in fields.iter().enumerate() {
                    out.push_str(&pad(indent + 1));
                    Json::Str(k.clone()).write(out, indent + 1);
                    out.push_str(": ");
                    v.write(out, indent + 1);
                    out.push_str(if n + 1 < fields.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push('}');
            }
        }
    }
}

fn tm_captures(captures: &[(usize, &'static str)]) -> Json {
    obj(captures.iter().map(|(n, scope)| (capture_key(*n), obj(vec![("name", s(*scope))]))).collect())
}

/// Capture numbers as JSON keys.
fn capture_key(n: usize) -> &'static str {
    const KEYS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    KEYS.get(n).copied().unwrap_or_else(|| panic!("capture group {n} is beyond what the description uses"))
}

fn tm_pattern(p: &Pattern) -> Json {
    match p {
        Pattern::Include(name) => obj(vec![("include", s(format!("#{name}")))]),
        Pattern::Match { regex, captures } => {
            let mut fields = vec![("match", s(regex.clone()))];
            let whole = captures.iter().find(|(n, _)| *n == 0);
            if let Some((_, scope)) = whole {
                fields.push(("name", s(*scope)));
            }
            let groups: Vec<_> = captures.iter().copied().filter(|(n, _)| *n != 0).collect();
            if !groups.is_empty() {
                fields.push(("captures", tm_captures(&groups)));
            }
            obj(fields)
        }
        Pattern::Region { begin, begin_captures, end, end_captures, scope, content, patterns, .. } => {
            let mut fields = vec![];
            if let Some(scope) = scope {
                fields.push(("name", s(*scope)));
            }
            if let Some(content) = content {
                fields.push(("contentName", s(*content)));
            }
            fields.push(("begin", s(begin.clone())));
            if !begin_captures.is_empty() {
                fields.push(("beginCaptures", tm_captures(begin_captures)));
            }
            fields.push(("end", s(end.clone())));
            if !end_captures.is_empty() {
                fields.push(("endCaptures", tm_captures(end_captures)));
            }
            fields.push(("patterns", Json::Arr(patterns.iter().map(tm_pattern).collect())));
            obj(fields)
        }
    }
}

const GENERATED: &str = "Generated from dsl/src/grammar.pest by dsl/src/editor.rs: do not edit by hand; \
`OVLC_UPDATE_EDITORS=1 cargo test -p dsl --test editors` writes it again.";

/// The TextMate grammar of the language (`syntaxes/ovl.tmLanguage.json` of
/// the VS Code extension), as JSON text ending with a newline.
///
/// # Panics
/// When `grammar.pest` lacks a rule the description reads (a test catches it).
pub fn textmate() -> String {
    let syntax = syntax(&words());
    let doc = obj(vec![
        ("information_for_contributors", Json::Arr(vec![s(GENERATED)])),
        ("name", s("OVL")),
        ("scopeName", s(SCOPE)),
        ("fileTypes", Json::Arr(vec![s("ovl")])),
        ("patterns", Json::Arr(syntax.main.iter().map(tm_pattern).collect())),
        (
            "repository",
            Json::Obj(
                syntax
                    .repository
                    .iter()
                    .map(|(name, ps)| {
                        (name.to_string(), obj(vec![("patterns", Json::Arr(ps.iter().map(tm_pattern).collect()))]))
                    })
                    .collect(),
            ),
        ),
    ]);
    let mut out = String::new();
    doc.write(&mut out, 0);
    out.push('\n');
    out
}

// ------------------------------------------------------------ Sublime Text (YAML)

fn yaml_str(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn yaml_captures(out: &mut String, pad: &str, captures: &[(usize, &'static str)]) {
    if let Some((_, scope)) = captures.iter().find(|(n, _)| *n == 0) {
        let _ = writeln!(out, "{pad}  scope: {scope}");
    }
    let groups: Vec<_> = captures.iter().filter(|(n, _)| *n != 0).collect();
    if !groups.is_empty() {
        let _ = writeln!(out, "{pad}  captures:");
        for (n, scope) in groups {
            let _ = writeln!(out, "{pad}    {n}: {scope}");
        }
    }
}

/// Writes a context's patterns; regions become a push to a context of their
/// own, collected in `contexts` to be written after.
fn yaml_patterns<'a>(out: &mut String, patterns: &'a [Pattern], contexts: &mut Vec<&'a Pattern>) {
    let pad = "    ";
    for p in patterns {
        match p {
            Pattern::Include(name) => {
                let _ = writeln!(out, "{pad}- include: {name}");
            }
            Pattern::Match { regex, captures } => {
                let _ = writeln!(out, "{pad}- match: {}", yaml_str(regex));
                yaml_captures(out, pad, captures);
            }
            Pattern::Region { id, begin, begin_captures, .. } => {
                let _ = writeln!(out, "{pad}- match: {}", yaml_str(begin));
                yaml_captures(out, pad, begin_captures);
                let _ = writeln!(out, "{pad}  push: {id}");
                contexts.push(p);
            }
        }
    }
}

fn groups_names(syntax: &Syntax) -> BTreeSet<&str> {
    std::iter::once("main").chain(syntax.repository.iter().map(|(n, _)| *n)).collect()
}

/// The Sublime Text syntax of the language (`ovl.sublime-syntax`), as YAML
/// text ending with a newline: the same description as [`textmate`].
///
/// # Panics
/// When `grammar.pest` lacks a rule the description reads (a test catches it).
pub fn sublime_syntax() -> String {
    let syntax = syntax(&words());
    let mut out = String::new();
    out.push_str("%YAML 1.2\n---\n");
    let _ = writeln!(out, "# {GENERATED}");
    out.push_str("name: OVL\nfile_extensions:\n  - ovl\n");
    let _ = writeln!(out, "scope: {SCOPE}");
    out.push_str("contexts:\n");
    let mut pending: Vec<&Pattern> = Vec::new();
    let mut groups: Vec<(&str, &[Pattern])> = vec![("main", &syntax.main)];
    groups.extend(syntax.repository.iter().map(|(n, ps)| (*n, ps.as_slice())));
    for (name, patterns) in groups {
        let _ = writeln!(out, "  {name}:");
        yaml_patterns(&mut out, patterns, &mut pending);
    }
    let mut pending: std::collections::VecDeque<&Pattern> = pending.into();
    let mut written: BTreeSet<&str> = groups_names(&syntax);
    while let Some(p) = pending.pop_front() {
        let Pattern::Region { id, end, end_captures, scope, content, patterns, .. } = p else { continue };
        assert!(written.insert(*id), "two contexts are named `{id}`");
        let _ = writeln!(out, "  {id}:");
        if let Some(scope) = scope {
            let _ = writeln!(out, "    - meta_scope: {scope}");
        }
        if let Some(content) = content {
            let _ = writeln!(out, "    - meta_content_scope: {content}");
        }
        // The end first: TextMate tries a region's end before its patterns.
        let _ = writeln!(out, "    - match: {}", yaml_str(end));
        yaml_captures(&mut out, "    ", end_captures);
        out.push_str("      pop: true\n");
        let mut nested = Vec::new();
        yaml_patterns(&mut out, patterns, &mut nested);
        pending.extend(nested);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_gives_every_word_class() {
        let w = words();
        assert!(w.statements.contains(&"mount".to_string()), "{:?}", w.statements);
        assert!(w.operations.contains(&"readlink".to_string()) && w.operations.contains(&"open-handle".to_string()));
        assert!(w.keywords.contains(&"with".to_string()) && w.keywords.contains(&"merged".to_string()));
        assert!(w.flags.contains(&"readonly".to_string()) && !w.flags.contains(&"opaque".to_string()));
        assert_eq!(w.results, ["any", "error", "ok"]);
        assert!(w.layer_items.contains(&"socket".to_string()) && !w.layer_items.contains(&"absent".to_string()));
        assert!(w.edit_items.contains(&"remove".to_string()) && w.edit_items.contains(&"file".to_string()));
        assert!(w.check_items.contains(&"absent".to_string()) && w.check_items.contains(&"entries".to_string()));
        assert_eq!(w.expect_by_word[1].1, ["contains", "not"]);
        assert!(w.comparisons.contains(&"<=".to_string()));
    }

    #[test]
    fn the_colour_lists_name_words_of_the_grammar() {
        let w = words();
        for word in CONTROL.iter().chain(HEADER).chain(LOGICAL) {
            assert!(
                w.keywords.iter().chain(&w.statements).any(|k| k == word),
                "`{word}` is no keyword of grammar.pest any more: update dsl/src/editor.rs"
            );
        }
        for word in EXPECT_BY_WORD.iter().map(|(w, _)| w).chain(&[OPEN_AS, WITH, TAGS]) {
            assert!(w.keywords.iter().any(|k| k == word), "`{word}` is no keyword of grammar.pest any more");
        }
    }

    #[test]
    fn pest_rules_are_read() {
        let rules = parse_rules("a = @{ \"x\" ~ !ident_char }\n// c \"{\"\nb = _{ &\"y\" ~ a | \"{\" }\n");
        assert_eq!(rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(one_word_rule(&rules[0].body), Some(vec!["x".to_string()]));
        assert_eq!(guards(&rules[1].body), ["y"]);
        assert_eq!(literals(&rules[1].body), ["y", "{"]);
    }
}
