//! The editor grammars (`editors/`): generated from the language's grammar,
//! checked in as generated, and highlighting the whole library without an
//! `invalid` scope. The Sublime syntax is loaded into a real highlighter
//! (the engine of the Sublime-syntax tools written in Rust, with pure-Rust
//! regexes) and run over every scenario; the TextMate grammar is the same
//! description written as JSON, so the tests also check that it holds the
//! same patterns.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use syntect::easy::ScopeRangeIterator;
use syntect::parsing::{ParseState, ScopeStack, SyntaxDefinition, SyntaxSet, SyntaxSetBuilder};
use syntect::util::LinesWithEndings;

mod common;

const GRAMMAR: &str = include_str!("../src/grammar.pest");
const UPDATE: &str = "OVLC_UPDATE_EDITORS";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn textmate_path() -> PathBuf {
    root().join("editors/vscode/syntaxes/ovl.tmLanguage.json")
}

fn sublime_path() -> PathBuf {
    root().join("editors/sublime/ovl.sublime-syntax")
}

fn syntax_set() -> &'static SyntaxSet {
    static SET: OnceLock<SyntaxSet> = OnceLock::new();
    SET.get_or_init(|| {
        let def = SyntaxDefinition::load_from_str(&dsl::editor::sublime_syntax(), true, None)
            .unwrap_or_else(|e| panic!("the generated sublime-syntax does not load: {e}"));
        let mut builder = SyntaxSetBuilder::new();
        builder.add(def);
        builder.build()
    })
}

/// One highlighted token: its byte range in its line and its scopes, outermost first.
#[derive(Debug)]
struct Token {
    range: Range<usize>,
    scopes: Vec<String>,
}

/// Every line of `text` (with its line ending), as tokens.
fn highlight(text: &str) -> Vec<(String, Vec<Token>)> {
    let set = syntax_set();
    let syntax = set.find_syntax_by_scope(syntect::parsing::Scope::new("source.ovl").unwrap()).unwrap();
    let mut state = ParseState::new(syntax);
    let mut stack = ScopeStack::new();
    let mut out = Vec::new();
    for line in LinesWithEndings::from(text) {
        let ops = state.parse_line(line, set).unwrap_or_else(|e| panic!("highlighting {line:?}: {e}"));
        let mut tokens = Vec::new();
        for (range, op) in ScopeRangeIterator::new(&ops, line) {
            stack.apply(op).unwrap();
            if !range.is_empty() {
                let scopes = stack.as_slice().iter().map(|s| s.build_string()).collect();
                tokens.push(Token { range, scopes });
            }
        }
        out.push((line.to_string(), tokens));
    }
    out
}

/// The scopes of the first occurrence of `needle` at or after byte `from`
/// in line `line` (0-based) of `text`: every token it covers must have the
/// same scopes.
fn scopes_from(text: &str, line: usize, needle: &str, from: usize) -> Vec<String> {
    let lines = highlight(text);
    let (src, tokens) = &lines[line];
    let at = from + src[from..].find(needle).unwrap_or_else(|| panic!("no {needle:?} in {src:?}"));
    let span = at..at + needle.len();
    let covering: Vec<&Token> =
        tokens.iter().filter(|t| t.range.start < span.end && span.start < t.range.end).collect();
    assert!(!covering.is_empty(), "{needle:?} in {src:?} has no token");
    for t in &covering {
        assert_eq!(
            t.scopes, covering[0].scopes,
            "{needle:?} in {src:?} is split into tokens of different scopes: {covering:?}"
        );
    }
    covering[0].scopes.clone()
}

fn scopes_of(text: &str, line: usize, needle: &str) -> Vec<String> {
    scopes_from(text, line, needle, 0)
}

fn has(scopes: &[String], prefix: &str) -> bool {
    scopes.iter().any(|s| s.starts_with(prefix))
}

fn is_keyword(scopes: &[String]) -> bool {
    has(scopes, "keyword.") || has(scopes, "support.function.")
}

fn invalid_tokens(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, (src, tokens)) in highlight(text).iter().enumerate() {
        for t in tokens {
            if has(&t.scopes, "invalid") {
                out.push((n + 1, format!("{:?} ({})", &src[t.range.clone()], t.scopes.join(" "))));
            }
        }
    }
    out
}

// ------------------------------------------------------------ a. checked in as generated

#[test]
fn the_checked_in_grammars_are_what_the_generator_writes() {
    let update = std::env::var_os(UPDATE).is_some();
    let mut stale = Vec::new();
    for (path, text) in [(textmate_path(), dsl::editor::textmate()), (sublime_path(), dsl::editor::sublime_syntax())] {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == text {
            continue;
        }
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else {
            stale.push(path.strip_prefix(root()).unwrap_or(&path).display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "{} differ from what dsl/src/editor.rs generates from dsl/src/grammar.pest; \
         rerun with {UPDATE}=1 (`{UPDATE}=1 cargo test -p dsl --test editors`) to rewrite them, and commit them",
        stale.join(" and ")
    );
}

/// Every regular expression of the TextMate grammar is in the Sublime syntax
/// too, and the other way round: they are one description.
#[test]
fn both_grammars_hold_the_same_patterns() {
    let json: serde_json::Value = serde_json::from_str(&dsl::editor::textmate()).unwrap();
    assert_eq!(json["scopeName"], "source.ovl");
    fn collect(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("match" | "begin" | "end", serde_json::Value::String(re)) => {
                            out.insert(re.clone());
                        }
                        _ => collect(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut regexes = BTreeSet::new();
    collect(&json, &mut regexes);
    assert!(regexes.len() > 20, "only {} regexes", regexes.len());
    let yaml = dsl::editor::sublime_syntax();
    let in_yaml: BTreeSet<String> = yaml
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- match: ").or_else(|| l.trim_start().strip_prefix("match: ")))
        .map(|q| q.trim_matches('\'').replace("''", "'"))
        .collect();
    assert_eq!(regexes, in_yaml, "the TextMate grammar and the Sublime syntax differ in their patterns");
}

// ------------------------------------------------------------ b. every keyword

/// A rule's text in grammar.pest, from `name =` to its closing brace.
fn rule_text(name: &str) -> String {
    let start = GRAMMAR
        .lines()
        .position(|l| l.split_whitespace().next() == Some(name) && l.contains('='))
        .unwrap_or_else(|| panic!("no rule {name} in grammar.pest"));
    let mut text = String::new();
    for l in GRAMMAR.lines().skip(start) {
        text.push_str(l);
        text.push('\n');
        if l.trim_end().ends_with('}') {
            break;
        }
    }
    text
}

/// The `&"word"` guards of a rule.
fn guard_words(name: &str) -> Vec<String> {
    rule_text(name).split("&\"").skip(1).map(|s| s[..s.find('"').unwrap()].to_string()).collect()
}

/// Every `kw_NAME` rule with its literal.
fn kw_rules() -> Vec<(String, String)> {
    GRAMMAR
        .lines()
        .filter(|l| l.starts_with("kw_"))
        .map(|l| {
            let name = l.split_whitespace().next().unwrap().to_string();
            let lit = l.split('"').nth(1).unwrap().to_string();
            (name, lit)
        })
        .collect()
}

/// The literals of every other one-word rule (`NAME = @{ ("a" | "b") ~ !ident_char }`).
fn flag_words() -> Vec<(String, String)> {
    GRAMMAR
        .lines()
        .filter(|l| !l.starts_with("kw_") && l.contains("@{") && l.trim_end().ends_with("~ !ident_char }"))
        .flat_map(|l| {
            let name = l.split_whitespace().next().unwrap().to_string();
            l.split('"').skip(1).step_by(2).map(move |w| (name.clone(), w.to_string())).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_keyword_of_the_grammar_is_highlighted_as_one() {
    let kws = kw_rules();
    assert!(kws.len() > 100, "only {} kw_ rules found", kws.len());
    for (name, word) in &kws {
        // Anywhere in a statement after its first word.
        let line = format!("mount base {word} x\n");
        let scopes = scopes_from(&line, 0, word, "mount base ".len());
        assert!(is_keyword(&scopes), "{name} (`{word}`) in {line:?}: {scopes:?}");
    }
    let results = ["ok_result", "any_result", "any_error"];
    for (name, word) in flag_words() {
        if results.contains(&name.as_str()) {
            let line = format!("mkdir /d => {word}\n");
            let scopes = scopes_from(&line, 0, &word, "mkdir /d => ".len());
            assert!(has(&scopes, "constant.language.ovl"), "{name} (`{word}`) in {line:?}: {scopes:?}");
        } else {
            let line = format!("mount base {word} x\n");
            let scopes = scopes_from(&line, 0, &word, "mount base ".len());
            assert!(
                is_keyword(&scopes) || has(&scopes, "storage.modifier"),
                "{name} (`{word}`) in {line:?}: {scopes:?}"
            );
        }
    }
}

#[test]
fn every_statement_starts_a_line() {
    let words: Vec<String> = guard_words("stmt").into_iter().chain(guard_words("op")).collect();
    assert!(words.len() > 60, "only {} statements found", words.len());
    for word in words {
        for line in [format!("{word} x\n"), format!("    {word}\n"), format!("if kernel < 6.1 {{ {word} x }}\n")] {
            let at = line.find(&word).unwrap();
            let scopes = scopes_from(&line, 0, &word, at);
            assert!(is_keyword(&scopes), "`{word}` in {line:?}: {scopes:?}");
            assert_eq!(invalid_tokens(&line), [], "{line:?}");
        }
    }
}

#[test]
fn every_block_item_starts_a_line_of_its_block() {
    let kw_literal = |name: &str| kw_rules().into_iter().find(|(n, _)| n == name).unwrap().1;
    let mountinfo: Vec<String> = rule_text("mi_check")
        .split_whitespace()
        .filter_map(|t| t.strip_suffix('?').or(Some(t)).filter(|t| t.starts_with("kw_")).map(kw_literal))
        .collect();
    assert_eq!(mountinfo.len(), 2, "{mountinfo:?}");
    let entries = guard_words("entry");
    let edit: Vec<String> = guard_words("edit_item").into_iter().chain(entries.clone()).collect();
    let blocks = [
        ("layer base {", entries),
        ("edit layer base {", edit),
        ("expect upper exactly {", guard_words("check")),
        ("expect layer {", guard_words("tar_entry")),
        ("expect mountinfo on m {", mountinfo),
    ];
    for (opener, words) in blocks {
        assert!(!words.is_empty(), "{opener}");
        for word in words {
            let text = format!("{opener}\n    {word} /x\n}}\n{opener} {word} /y }}\n");
            assert!(is_keyword(&scopes_of(&text, 1, &word)), "`{word}` in {text:?}");
            assert!(is_keyword(&scopes_from(&text, 3, &word, opener.len())), "`{word}` in {text:?}");
            assert_eq!(invalid_tokens(&text), [], "{text:?}");
        }
    }
}

// ------------------------------------------------------------ c. the library

#[test]
fn the_library_highlights_without_an_invalid_scope() {
    let files = common::library_files();
    assert!(files.len() > 300, "only {} scenario files", files.len());
    let mut offenders = Vec::new();
    let mut plain = Vec::new();
    let (mut keywords, mut strings, mut paths) = (0usize, 0usize, 0usize);
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.strip_prefix(root()).unwrap_or(path).display().to_string();
        let mut file_keywords = 0;
        for (n, (src, tokens)) in highlight(&text).iter().enumerate() {
            for t in tokens {
                if has(&t.scopes, "invalid") {
                    offenders.push(format!("{name}:{}: {:?} ({})", n + 1, &src[t.range.clone()], t.scopes.join(" ")));
                }
                if is_keyword(&t.scopes) {
                    file_keywords += 1;
                }
                strings += usize::from(has(&t.scopes, "string.quoted"));
                paths += usize::from(has(&t.scopes, "string.unquoted.path"));
            }
        }
        if file_keywords < 3 {
            plain.push(name);
        }
        keywords += file_keywords;
    }
    assert!(offenders.is_empty(), "{} invalid tokens in the library:\n{}", offenders.len(), offenders.join("\n"));
    assert!(plain.is_empty(), "files with (almost) no keyword scope: {plain:?}");
    assert!(keywords > 20 * files.len() && strings > 1000 && paths > 1000, "{keywords} {strings} {paths}");
}

// ------------------------------------------------------------ d. errors and the question mark

#[test]
fn what_cannot_be_valid_is_invalid() {
    let cases = [
        // A misspelt statement, at the start of a line or of a one-line block.
        ("wirte /a \"x\"\n", "wirte"),
        ("if kernel < 6.1 { wirte /a \"x\" }\n", "wirte"),
        ("    mounte base\n", "mounte"),
        // `else` only follows a block's `}`.
        ("else {\n", "else"),
        // Items outside their blocks, or in a block of another kind.
        ("file /a \"x\"\n", "file"),
        ("expect upper {\n    write /a \"x\"\n}\n", "write"),
        ("layer base {\n    absent /a\n}\n", "absent"),
        ("expect layer {\n    absent /a\n}\n", "absent"),
        ("expect mountinfo {\n    file /a\n}\n", "file"),
        ("expect upper { mkdir /a }\n", "mkdir"),
        // Strings not closed on their line, unknown escapes.
        ("write /a \"x\n", "\"x"),
        ("write /a \"x\\\"\n", "\"x\\\""),
        ("write /a \"x\" \"y\n", "\"y"),
        ("layer base {\n    file /a \"x\n}\n", "\"x"),
        ("write /a \"\\q\"\n", "\\q"),
        // Results that are no errno, nor a result word.
        ("mkdir /a => ENOTANERRNO\n", "ENOTANERRNO"),
        ("mkdir /a => enoent\n", "enoent"),
        ("mkdir /a => Ok\n", "Ok"),
        // Tags are words.
        ("tags a, b.c\n", "b.c"),
    ];
    for (text, bad) in cases {
        let line = text.lines().position(|l| l.contains(bad)).unwrap();
        let scopes = scopes_of(text, line, bad);
        assert!(has(&scopes, "invalid.illegal"), "{bad:?} in {text:?}: {scopes:?}");
    }
    // An unterminated string's invalid scope ends with its line.
    assert_eq!(invalid_tokens("write /a \"x\nmkdir /b\n").len(), 1);
    // `"""` strings span lines; a `"` inside one is text.
    assert_eq!(invalid_tokens("about \"\"\"\nsays \"hi\nand more\n\"\"\"\ntags a\n"), []);
}

#[test]
fn the_question_mark_is_highlighted() {
    let cases = [
        ("mkdir /a => ?\n", "?"),
        ("mkdir /a =>?\n", "?"),
        ("expect upper ?\n", "?"),
        ("expect upper exactly ?\n", "?"),
        ("expect merged inner ?  # to be filled in\n", "?"),
        ("expect work w ?\n", "?"),
        ("if kernel >= 6.5 {\n    read /a => ?\n}\n", "?"),
    ];
    for (text, q) in cases {
        let line = text.lines().position(|l| l.contains(q)).unwrap();
        let scopes = scopes_of(text, line, q);
        assert!(has(&scopes, "keyword.operator.question.ovl"), "{text:?}: {scopes:?}");
        assert_eq!(invalid_tokens(text), [], "{text:?}");
    }
    // Inside a path or a string it is text.
    assert!(has(&scopes_of("write /a? \"?\"\n", 0, "/a?"), "string.unquoted.path.ovl"));
    assert!(has(&scopes_from("write /a? \"?\"\n", 0, "?", 9), "string.quoted.double.ovl"));
}

#[test]
fn a_scenario_gets_its_scopes() {
    let text = r#"# a comment
scenario "Copy-up \"quoted\"\n"
about """
Stack two layers; "quotes" inside.
"""
tags lab, copy-up
requires kernel >= 5.11 and not driver == fuse
vary index=on|off
layer base {
    file /etc/motd "x" mode 0644 owner 1000:1000 xattr user.k="v"
    dir /d opaque
}
mount base with xino=on, redirect_dir=on readonly
open /etc/motd as r rdonly|directory
read r 4KiB at 0 => "x"
rename /a /b noreplace => EXDEV|ENOTEMPTY
mkdir /c => ok
chattr /f +i -a
compare @b before ino,dev same
expect upper exactly {
    absent /etc/hosts
    xattrs /x [trusted.overlay.origin, "a b"]
}
"#;
    let cases: &[(usize, &str, &str)] = &[
        (0, "#", "punctuation.definition.comment.ovl"),
        (0, "a comment", "comment.line.number-sign.ovl"),
        (1, "scenario", "keyword.other.header.ovl"),
        (1, "Copy-up", "string.quoted.double.ovl"),
        (1, "\\\"", "constant.character.escape.ovl"),
        (1, "\\n", "constant.character.escape.ovl"),
        (3, "Stack two", "string.quoted.triple.ovl"),
        (5, "tags", "keyword.other.header.ovl"),
        (5, "copy-up", "entity.name.tag.ovl"),
        (6, "requires", "keyword.control.ovl"),
        (6, "kernel", "keyword.other.ovl"),
        (6, ">=", "keyword.operator.comparison.ovl"),
        (6, "5.11", "constant.numeric.ovl"),
        (6, "and", "keyword.operator.logical.ovl"),
        (7, "index", "variable.parameter.option.ovl"),
        (8, "layer", "keyword.other.ovl"),
        (8, "{", "punctuation.section.block.begin.ovl"),
        (9, "file", "keyword.other.entry.ovl"),
        (9, "/etc/motd", "string.unquoted.path.ovl"),
        (9, "mode", "keyword.other.ovl"),
        (9, "0644", "constant.numeric.mode.ovl"),
        (9, "1000", "constant.numeric.ovl"),
        (9, "user.k", "entity.other.attribute-name.xattr.ovl"),
        (10, "opaque", "keyword.other.ovl"),
        (11, "}", "punctuation.section.block.end.ovl"),
        (12, "mount", "keyword.other.ovl"),
        (12, "with", "keyword.other.ovl"),
        (12, "xino", "variable.parameter.option.ovl"),
        (12, "redirect_dir", "variable.parameter.option.ovl"),
        (12, "readonly", "storage.modifier.ovl"),
        (13, "open", "support.function.ovl"),
        (13, "as", "keyword.control.ovl"),
        (13, "rdonly|directory", "storage.modifier.open-flag.ovl"),
        (14, "read", "support.function.ovl"),
        (14, "4KiB", "constant.numeric.ovl"),
        (14, "=>", "keyword.operator.result.ovl"),
        (15, "noreplace", "storage.modifier.ovl"),
        (15, "EXDEV", "constant.other.errno.ovl"),
        (15, "ENOTEMPTY", "constant.other.errno.ovl"),
        (16, "ok", "constant.language.ovl"),
        (17, "+i", "constant.other.inode-flag.ovl"),
        (18, "b", "variable.other.name.ovl"),
        (18, "same", "storage.modifier.ovl"),
        (19, "exactly", "storage.modifier.ovl"),
        (20, "absent", "keyword.other.check.ovl"),
        (21, "xattrs", "keyword.other.check.ovl"),
        (21, "[", "punctuation.section.brackets.begin.ovl"),
        (21, "trusted.overlay.origin", "entity.other.attribute-name.xattr.ovl"),
        (21, "a b", "string.quoted.double.ovl"),
    ];
    for &(line, needle, scope) in cases {
        let scopes = scopes_of(text, line, needle);
        assert!(has(&scopes, scope), "{needle:?} on line {}: {scopes:?}, not {scope}", line + 1);
    }
    assert_eq!(invalid_tokens(text), []);
}

// ------------------------------------------------------------ e. the VS Code extension

#[test]
fn the_vscode_extension_names_files_that_exist() {
    let dir = root().join("editors/vscode");
    let read_json = |p: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
    };
    let package = read_json(&dir.join("package.json"));
    let languages = package["contributes"]["languages"].as_array().unwrap();
    let ovl = languages.iter().find(|l| l["id"] == "ovl").expect("no language `ovl`");
    assert!(ovl["extensions"].as_array().unwrap().iter().any(|e| e == ".ovl"), "{ovl}");
    assert!(!ovl["aliases"].as_array().unwrap().is_empty(), "{ovl}");
    let config = read_json(&dir.join(ovl["configuration"].as_str().unwrap()));
    assert_eq!(config["comments"]["lineComment"], "#");
    let grammars = package["contributes"]["grammars"].as_array().unwrap();
    let grammar = grammars.iter().find(|g| g["language"] == "ovl").expect("no grammar for `ovl`");
    assert_eq!(grammar["scopeName"], "source.ovl");
    let path = dir.join(grammar["path"].as_str().unwrap());
    assert_eq!(path.canonicalize().unwrap(), textmate_path().canonicalize().unwrap());
    assert_eq!(read_json(&path)["scopeName"], "source.ovl");
}
