//! From text to tree: the pest parser, a lexical pre-scan, and one build function per rule.
//!
//! The pre-scan refuses what could make the parser run away (unterminated
//! strings, nesting deeper than [`MAX_DEPTH`]) and splits the file into
//! top-level statements, so that after a syntax error every other statement
//! is still parsed and checked: a file reports all of its errors at once.

use pest::iterators::Pair;
use pest::Parser as _;
use pest_derive::Parser;

use crate::ast::*;
use crate::diag::{brief, Diag, ErrorKind, LineIndex};
use crate::errno;
use crate::text::{dedent, unescape, Bytes};

#[derive(Parser)]
#[grammar = "grammar.pest"]
struct OvlParser;

/// Deepest nesting of braces, parentheses and `not` accepted.
pub const MAX_DEPTH: usize = 64;

type P<'i> = Pair<'i, Rule>;

fn is_op_keyword(r: Rule) -> bool {
    matches!(
        r,
        Rule::kw_write
            | Rule::kw_append
            | Rule::kw_create
            | Rule::kw_truncate
            | Rule::kw_read
            | Rule::kw_readlink
            | Rule::kw_measure
            | Rule::kw_readdir
            | Rule::kw_mkdir
            | Rule::kw_rmdir
            | Rule::kw_unlink
            | Rule::kw_rename
            | Rule::kw_link
            | Rule::kw_symlink
            | Rule::kw_mknod
            | Rule::kw_chmod
            | Rule::kw_chown
            | Rule::kw_touch
            | Rule::kw_setxattr
            | Rule::kw_removexattr
            | Rule::kw_getxattr
            | Rule::kw_stat
            | Rule::kw_same_inode
            | Rule::kw_drop_caches
            | Rule::kw_sync
            | Rule::kw_open
            | Rule::kw_close
            | Rule::kw_rewind
            | Rule::kw_ftruncate
            | Rule::kw_fsync
            | Rule::kw_fdatasync
            | Rule::kw_fchmod
            | Rule::kw_fchown
            | Rule::kw_fsetxattr
            | Rule::kw_fgetxattr
            | Rule::kw_fstat
            | Rule::kw_fallocate
            | Rule::kw_flock
            | Rule::kw_mmap
            | Rule::kw_lstat
            | Rule::kw_statfs
            | Rule::kw_dirent
            | Rule::kw_compare
            | Rule::kw_value
            | Rule::kw_listxattr
            | Rule::kw_handle
            | Rule::kw_chattr
            | Rule::kw_setacl
            | Rule::kw_sleep
            | Rule::kw_open_handle
    )
}

fn is_keyword(r: Rule) -> bool {
    is_op_keyword(r)
        || matches!(
            r,
            Rule::kw_scenario
                | Rule::kw_about
                | Rule::kw_tags
                | Rule::kw_requires
                | Rule::kw_vary
                | Rule::kw_param
                | Rule::kw_backing
                | Rule::kw_layer
                | Rule::kw_from
                | Rule::kw_file
                | Rule::kw_dir
                | Rule::kw_hardlink
                | Rule::kw_fifo
                | Rule::kw_device
                | Rule::kw_whiteout
                | Rule::kw_mode
                | Rule::kw_owner
                | Rule::kw_xattr
                | Rule::kw_size
                | Rule::kw_mount
                | Rule::kw_with
                | Rule::kw_upper
                | Rule::kw_umount
                | Rule::kw_remount
                | Rule::kw_if
                | Rule::kw_else
                | Rule::kw_as
                | Rule::kw_expect
                | Rule::kw_and
                | Rule::kw_or
                | Rule::kw_not
                | Rule::kw_kernel
                | Rule::kw_driver
                | Rule::kw_option
                | Rule::kw_absent
                | Rule::kw_no
                | Rule::kw_metacopy
                | Rule::kw_redirect
                | Rule::kw_nlink
                | Rule::kw_opaque
                | Rule::kw_at
                | Rule::kw_max
                | Rule::kw_edit
                | Rule::kw_remove
                | Rule::kw_socket
                | Rule::kw_via
                | Rule::kw_on
                | Rule::kw_work
                | Rule::kw_entries
                | Rule::kw_blocks
                | Rule::kw_attrs
                | Rule::kw_acl
                | Rule::kw_xattrs
                | Rule::kw_options
                | Rule::kw_filesystem
                | Rule::kw_reconfigure
                | Rule::kw_mountinfo
                | Rule::kw_contains
        )
}

/// Statement keywords, for "unknown statement" help.
pub const STATEMENTS: &[&str] = &[
    "scenario",
    "about",
    "tags",
    "requires",
    "vary",
    "param",
    "backing",
    "layer",
    "filesystem",
    "edit",
    "mount",
    "umount",
    "remount",
    "reconfigure",
    "if",
    "as",
    "on",
    "expect",
    "write",
    "append",
    "create",
    "truncate",
    "read",
    "readlink",
    "measure",
    "readdir",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "link",
    "symlink",
    "mknod",
    "chmod",
    "chown",
    "touch",
    "setxattr",
    "removexattr",
    "getxattr",
    "stat",
    "same-inode",
    "drop-caches",
    "sync",
    "open",
    "close",
    "rewind",
    "ftruncate",
    "fsync",
    "fdatasync",
    "fchmod",
    "fchown",
    "fsetxattr",
    "fgetxattr",
    "fstat",
    "fallocate",
    "flock",
    "mmap",
    "lstat",
    "statfs",
    "dirent",
    "compare",
    "value",
    "listxattr",
    "handle",
    "open-handle",
    "chattr",
    "setacl",
    "sleep",
];

fn kids<'i>(p: &P<'i>) -> impl Iterator<Item = P<'i>> {
    p.clone().into_inner().filter(|c| !is_keyword(c.as_rule()))
}

// ------------------------------------------------------------------ pre-scan

/// What the pre-scan learnt: the byte ranges of the top-level statements.
#[derive(Debug)]
pub(crate) struct Scan {
    pub chunks: Vec<(usize, usize)>,
}

/// The end of the `"""` string that starts at `start`.
fn skip_text_block(text: &str, start: usize) -> Result<usize, Vec<Diag>> {
    let b = text.as_bytes();
    let mut i = start + 3;
    loop {
        if i >= b.len() {
            let line_end = text[start..].find('\n').map_or(text.len(), |n| start + n);
            return Err(vec![Diag::new(
                ErrorKind::UnterminatedString,
                "this `\"\"\"` string is never closed",
                (start, line_end.max(start + 3)),
                "opened here",
            )
            .with_help("close it with `\"\"\"`")]);
        }
        if b[i] == b'\\' {
            i += 2;
        } else if b[i..].starts_with(b"\"\"\"") {
            return Ok(i + 3);
        } else {
            i += 1;
        }
    }
}

/// The end of the `"` string that starts at `start` (on its line).
fn skip_string(b: &[u8], start: usize) -> Result<usize, Vec<Diag>> {
    let mut i = start + 1;
    loop {
        if i >= b.len() || b[i] == b'\n' || b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            return Err(vec![Diag::new(
                ErrorKind::UnterminatedString,
                "this string is not closed on its line",
                (start, i.max(start + 1)),
                "opened here",
            )
            .with_help("close it with `\"`, or use `\"\"\"` for text over several lines")]);
        }
        if b[i] == b'\\' && b.get(i + 1).is_some_and(|&n| n != b'\n') {
            i += 2;
        } else if b[i] == b'"' {
            return Ok(i + 1);
        } else {
            i += 1;
        }
    }
}

/// Finds unterminated strings and excessive nesting without recursion, and
/// splits the text into top-level statements (a line at depth 0, through the
/// line that closes the braces it opens).
pub(crate) fn prescan(text: &str) -> Result<Scan, Vec<Diag>> {
    let b = text.as_bytes();
    let mut chunks = Vec::new();
    let mut depth: usize = 0;
    let mut parens: usize = 0;
    let mut nots: usize = 0;
    // `and`/`or` on the line: a chain of them is a tree as deep as it is long.
    let mut joins: usize = 0;
    let mut chunk_start: Option<usize> = None;
    let mut i = 0;
    let too_deep = |at: usize, what: &str| {
        vec![Diag::new(
            ErrorKind::TooDeep,
            format!("{what} nested deeper than {MAX_DEPTH} levels"),
            (at, at + 1),
            format!("level {}", MAX_DEPTH + 1),
        )
        .with_help("split the scenario into flatter blocks")]
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                parens = 0;
                nots = 0;
                joins = 0;
                if depth == 0 {
                    if let Some(s) = chunk_start.take() {
                        chunks.push((s, i + 1));
                    }
                }
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                // A comment ends where the grammar's does: at `\n` or `\r`.
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        if chunk_start.is_none() {
            chunk_start = Some(i);
        }
        match c {
            b'"' if b[i..].starts_with(b"\"\"\"") => i = skip_text_block(text, i)?,
            b'"' => i = skip_string(b, i)?,
            b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(i, "blocks"));
                }
                i += 1;
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'(' => {
                parens += 1;
                if parens + nots > MAX_DEPTH {
                    return Err(too_deep(i, "conditions"));
                }
                i += 1;
            }
            b')' => {
                parens = parens.saturating_sub(1);
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !matches!(b[i], b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'#' | b'{' | b'}' | b'(' | b')')
                {
                    i += 1;
                }
                if &b[start..i] == b"not" {
                    nots += 1;
                    if parens + nots > MAX_DEPTH {
                        return Err(too_deep(start, "conditions"));
                    }
                }
                if &b[start..i] == b"and" || &b[start..i] == b"or" {
                    joins += 1;
                    if joins > MAX_DEPTH {
                        return Err(vec![Diag::new(
                            ErrorKind::TooDeep,
                            format!("more than {MAX_DEPTH} `and`/`or` in one line"),
                            (start, i),
                            format!("operator {}", MAX_DEPTH + 1),
                        )
                        .with_help(
                            "a chain of conditions nests like parentheses; `requires A, B` needs no `and`, \
                             and long alternatives belong in `if ... else if` branches",
                        )]);
                    }
                }
            }
        }
    }
    if let Some(s) = chunk_start {
        chunks.push((s, text.len()));
    }
    Ok(Scan { chunks })
}

// ------------------------------------------------------------------ entry points

/// Parses a whole file. Returns the body and every error found.
pub(crate) fn parse_file(text: &str) -> (Block<Stmt>, Vec<Diag>, Recovery) {
    let lines = LineIndex::new(text);
    let scan = match prescan(text) {
        Ok(s) => s,
        Err(d) => return (Block::default(), d, Recovery { failed: true, ..Default::default() }),
    };
    match OvlParser::parse(Rule::file, text) {
        Ok(mut pairs) => {
            let mut b = Builder { text, lines: &lines, base: 0, diags: Vec::new() };
            let body = match pairs.next() {
                Some(file) => b.block(&file, false, Builder::stmt),
                None => Block::default(),
            };
            (body, b.diags, Recovery::default())
        }
        Err(_) => parse_chunks(text, &lines, &scan),
    }
}

/// What a failed statement still tells validation, so that it does not
/// report errors that only follow from the syntax error.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub failed: bool,
    pub layers: std::collections::HashSet<String>,
}

fn parse_chunks(text: &str, lines: &LineIndex, scan: &Scan) -> (Block<Stmt>, Vec<Diag>, Recovery) {
    let mut diags = Vec::new();
    let mut items = Vec::new();
    let mut rec = Recovery { failed: true, ..Default::default() };
    for &(s, e) in &scan.chunks {
        let piece = &text[s..e];
        match OvlParser::parse(Rule::chunk, piece) {
            Ok(mut pairs) => {
                let mut b = Builder { text, lines, base: s, diags: Vec::new() };
                if let Some(chunk) = pairs.next() {
                    let block = b.block(&chunk, false, Builder::stmt);
                    items.extend(block.items);
                }
                diags.extend(b.diags);
            }
            Err(err) => {
                let mut words = piece.split_whitespace();
                if words.next() == Some("layer") {
                    if let Some(name) = words.next() {
                        rec.layers.insert(name.trim_end_matches('{').to_string());
                    }
                }
                diags.push(syntax_error(text, s, piece, &err));
            }
        }
    }
    let _ = lines;
    (Block { items, end: Vec::new() }, diags, rec)
}

fn describe(rule: Rule) -> String {
    let s = format!("{rule:?}");
    if let Some(k) = s.strip_prefix("kw_") {
        return format!("`{}`", k.replace('_', "-"));
    }
    match rule {
        Rule::path | Rule::bare_path => "a path".into(),
        Rule::string | Rule::quoted_string | Rule::triple_string => "a string".into(),
        Rule::ident => "a name".into(),
        Rule::word => "a value".into(),
        Rule::pair_tok => "a pair of numbers like `0:0`".into(),
        Rule::xattr_name => "an xattr name".into(),
        Rule::result => "`=>`".into(),
        Rule::line_end => "the end of the line".into(),
        Rule::EOI => "the end of the file".into(),
        Rule::comment => "a comment".into(),
        Rule::op_stmt => "an operation (`as` blocks hold operations only)".into(),
        Rule::userns_flag => "`in userns`".into(),
        Rule::verity_flag => "`verity`".into(),
        Rule::opaque_flag => "`opaque`".into(),
        Rule::not_opaque_flag => "`not opaque`".into(),
        Rule::readonly_flag => "`readonly`".into(),
        Rule::exactly_flag => "`exactly`".into(),
        Rule::fifo_flag => "`fifo`".into(),
        Rule::socket_flag => "`socket`".into(),
        Rule::dev_kind => "`char` or `block`".into(),
        Rule::rename_flag => "`noreplace`, `exchange` or `whiteout`".into(),
        Rule::tree_target => "`upper`, `merged`, `work` or `layer`".into(),
        Rule::tree_name => "a name".into(),
        Rule::in_mount => "`MOUNT:/path`".into(),
        Rule::upper_dir => "`upper`".into(),
        Rule::work_dir => "`work`".into(),
        Rule::mount_name => "`as`".into(),
        Rule::cmp_op => "a comparison (`<`, `<=`, `==`, `!=`, `>=`, `>`)".into(),
        Rule::mount_opt | Rule::opt_name => "a mount option".into(),
        Rule::vary_axis => "`NAME=V1|V2`".into(),
        Rule::tag => "a tag".into(),
        Rule::cond | Rule::cond_and | Rule::cond_not => "a condition".into(),
        Rule::name_list => "a list `[a, b]`".into(),
        Rule::ok_result | Rule::errno | Rule::any_error | Rule::any_result | Rule::errno_set => {
            "`ok` or an errno name".into()
        }
        Rule::open_flags => "open flags like `rdonly` or `wronly|creat`".into(),
        Rule::falloc_mode => "`keep-size` or `punch-hole`".into(),
        Rule::flock_how => "`sh`, `ex` or `un`".into(),
        Rule::nb_flag => "`nb`".into(),
        Rule::at_clause => "`at`".into(),
        Rule::max_clause => "`max`".into(),
        Rule::read_size => "a size".into(),
        Rule::mmap_write | Rule::mmap_read => "`write` or `read`".into(),
        Rule::compare_how => "`same`, `different`, `newer` or `older`".into(),
        Rule::field_list => "fields like `ino,dev`".into(),
        Rule::other_name => "`@NAME`".into(),
        Rule::list_name => "a name".into(),
        Rule::edit_body => "`{`".into(),
        Rule::mount_via => "`via`".into(),
        Rule::mount_raw => "`options`".into(),
        Rule::mount_driver => "`driver`".into(),
        Rule::attr_change => "inode flags like `+i` or `-a`".into(),
        Rule::default_flag => "`default`".into(),
        Rule::raw_flag => "`raw`".into(),
        Rule::flags_attr => "`attrs`".into(),
        Rule::layer_on => "`on`".into(),
        Rule::layer_path => "`LAYER:/path`".into(),
        Rule::mountinfo_block => "`{`".into(),
        Rule::mi_check => "`contains`".into(),
        Rule::via_how => "`string`, `append`, `fd` or `legacy`".into(),
        Rule::layer_body | Rule::stmt_block | Rule::op_block | Rule::check_block | Rule::tar_block => "`{`".into(),
        Rule::open_result | Rule::open_block => "`?`".into(),
        Rule::layer_from => "`from`".into(),
        Rule::upper_from => "`upper from`".into(),
        Rule::mount_with => "`with`".into(),
        Rule::data_layers => "`::`".into(),
        Rule::size_attr => "`size`".into(),
        Rule::mode_attr => "`mode`".into(),
        Rule::owner_attr => "`owner`".into(),
        Rule::xattr_attr => "`xattr`".into(),
        Rule::else_clause => "`else`".into(),
        other => format!("{other:?}").replace('_', " "),
    }
}

fn syntax_error(text: &str, base: usize, piece: &str, err: &pest::error::Error<Rule>) -> Diag {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let at = base + pos;
    let rest = &piece[pos.min(piece.len())..];
    let token: String =
        rest.chars().take_while(|c| !c.is_whitespace() && !matches!(c, '{' | '}' | ',' | '"' | '#')).collect();
    let token = if token.is_empty() {
        rest.chars().next().filter(|c| !c.is_whitespace()).map(String::from).unwrap_or_default()
    } else {
        token
    };
    let found = if token.is_empty() {
        if rest.starts_with(['\n', '\r']) || rest.is_empty() {
            "the end of the line".to_string()
        } else {
            "white space".to_string()
        }
    } else {
        format!("`{token}`")
    };
    let end = (at + token.len()).max(at + 1).min(text.len().max(at + 1));

    // The first word of the statement is not a keyword: say so plainly.
    let first_word_at = piece.len() - piece.trim_start().len();
    if pos == first_word_at && !token.is_empty() && !STATEMENTS.contains(&token.as_str()) {
        let mut d = Diag::new(
            ErrorKind::UnknownStatement,
            format!("unknown statement `{token}`"),
            (at, end),
            "not a statement",
        );
        d = match crate::diag::closest(&token, STATEMENTS.iter().copied()) {
            Some(k) => d.with_help(format!("did you mean `{k}`?")),
            None => d.with_help("a statement starts with a keyword such as `layer`, `mount`, `write` or `expect`"),
        };
        return d;
    }

    let expected = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let has = |r: Rule| positives.contains(&r);
            let mut groups: Vec<String> = Vec::new();
            let mut rest: Vec<Rule> = positives.clone();
            let mut take = |name: &str, member: &dyn Fn(Rule) -> bool, trigger: bool| {
                if trigger {
                    groups.push(name.to_string());
                    rest.retain(|r| !member(*r));
                }
            };
            let statement = has(Rule::kw_layer) && has(Rule::kw_write);
            take("a statement", &|r| is_keyword(r), statement);
            let op = !statement && has(Rule::kw_write);
            take("an operation", &is_op_keyword, op);
            let check = has(Rule::kw_absent);
            take("a check (file, dir, symlink, absent, xattr, mode, ...)", &|r| is_keyword(r), check);
            let entry = !check && has(Rule::kw_hardlink) && has(Rule::kw_fifo);
            take("a layer entry (file, dir, symlink, hardlink, fifo, device, whiteout)", &|r| is_keyword(r), entry);
            let member = !check && has(Rule::kw_opaque) && has(Rule::kw_hardlink);
            take("a layer member (dir, file, symlink, hardlink, whiteout, opaque)", &|r| is_keyword(r), member);
            let result = has(Rule::ok_result);
            take(
                "a result (`ok`, an errno name, `error`, `any`, a string, a list or `?`)",
                &|r| {
                    matches!(
                        r,
                        Rule::open_result
                            | Rule::ok_result
                            | Rule::errno
                            | Rule::any_error
                            | Rule::any_result
                            | Rule::errno_set
                            | Rule::string
                            | Rule::name_list
                    )
                },
                result,
            );
            let mut names: Vec<String> = groups;
            for r in rest {
                let d = describe(r);
                if !names.contains(&d) {
                    names.push(d);
                }
            }
            match names.len() {
                0 => "something else".to_string(),
                1 => names.remove(0),
                _ => {
                    let last = names.pop().unwrap_or_default();
                    format!("{} or {}", names.join(", "), last)
                }
            }
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    Diag::new(
        ErrorKind::Syntax,
        format!("expected {expected}, found {found}"),
        (at, end),
        format!("expected {expected}"),
    )
}

// ------------------------------------------------------------------ builder

struct Builder<'a> {
    text: &'a str,
    lines: &'a LineIndex,
    base: usize,
    diags: Vec<Diag>,
}

impl<'a> Builder<'a> {
    fn span(&self, p: &P<'_>) -> Span {
        let s = p.as_span();
        let start = self.base + s.start();
        let end = self.base + s.end();
        let (line, col) = self.lines.line_col(self.text, start);
        Span { start, end, line, col }
    }

    fn err(&mut self, kind: ErrorKind, msg: impl Into<String>, span: Span, label: impl Into<String>) -> &mut Diag {
        self.diags.push(Diag::new(kind, msg, (span.start, span.end), label));
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    fn help(
        &mut self,
        kind: ErrorKind,
        msg: impl Into<String>,
        span: Span,
        label: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags.push(Diag::new(kind, msg, (span.start, span.end), label).with_help(help));
    }

    /// Items with their comments and blank lines, for every kind of block.
    fn block<T>(&mut self, p: &P<'_>, braced: bool, mut item: impl FnMut(&mut Self, P<'_>) -> T) -> Block<T> {
        let mut items: Vec<Item<T>> = Vec::new();
        let mut pending: Vec<Trivia> = Vec::new();
        let mut after_item = false;
        let mut brace_line = braced;
        for c in p.clone().into_inner() {
            let comment = match c.as_rule() {
                Rule::line_end => c.clone().into_inner().next().map(|cm| cm.as_str().trim_end().to_string()),
                Rule::comment => Some(c.as_str().trim_end().to_string()),
                Rule::EOI => continue,
                _ => {
                    brace_line = false;
                    let span = self.span(&c);
                    let node = item(self, c);
                    items.push(Item { before: std::mem::take(&mut pending), node, comment: None, span });
                    after_item = true;
                    continue;
                }
            };
            if after_item {
                if let Some(last) = items.last_mut() {
                    last.comment = comment;
                }
                after_item = false;
            } else if brace_line {
                brace_line = false;
                pending.extend(comment.map(Trivia::Comment));
            } else {
                match comment {
                    Some(c) => pending.push(Trivia::Comment(c)),
                    None => {
                        if (!items.is_empty() || !pending.is_empty()) && pending.last() != Some(&Trivia::Blank) {
                            pending.push(Trivia::Blank);
                        }
                    }
                }
            }
        }
        while pending.last() == Some(&Trivia::Blank) {
            pending.pop();
        }
        Block { items, end: pending }
    }

    // -------------------------------------------------------------- statements

    fn stmt(&mut self, p: P<'_>) -> Stmt {
        let rule = p.as_rule();
        let mut k = kids(&p);
        match rule {
            Rule::scenario_stmt => Stmt::Scenario(self.string(k.next())),
            Rule::about_stmt => Stmt::About(self.string(k.next())),
            Rule::tags_stmt => Stmt::Tags(k.map(|t| self.name(&t)).collect()),
            Rule::requires_stmt => Stmt::Requires(k.map(|c| self.cond(c)).collect()),
            Rule::vary_stmt => Stmt::Vary(k.map(|a| self.vary_axis(a)).collect()),
            Rule::param_stmt => Stmt::Param(k.map(|a| self.vary_axis(a)).collect()),
            Rule::backing_stmt => Stmt::Backing(self.backing(k.next())),
            Rule::layer_stmt => Stmt::Layer(self.layer(p)),
            Rule::filesystem_stmt => {
                let name = match k.next() {
                    Some(n) => self.name(&n),
                    None => Spanned::new(String::new(), Span::default()),
                };
                let kind = self.one_of(
                    k.next(),
                    &FsKind::ALL,
                    FsKind::name,
                    (ErrorKind::UnknownBacking, "filesystem kind", "a filesystem is one of"),
                );
                let size = k.next().and_then(|s| kids(&s).next()).map(|w| self.size(&w));
                Stmt::Filesystem(Filesystem { name, kind, size })
            }
            Rule::edit_stmt => Stmt::Edit(self.edit(p)),
            Rule::mount_stmt => Stmt::Mount(Box::new(self.mount(p))),
            Rule::umount_stmt => {
                let mut u = Umount { mount: None, result: None };
                for c in k {
                    match c.as_rule() {
                        Rule::ident => u.mount = Some(self.name(&c)),
                        _ => u.result = Some(self.result(c)),
                    }
                }
                Stmt::Umount(u)
            }
            Rule::reconfigure_stmt => {
                let mut r = Reconfigure { options: Vec::new(), result: None };
                for c in k {
                    match c.as_rule() {
                        Rule::mount_opt => r.options.push(self.mount_opt(&c)),
                        _ => r.result = Some(self.result(c)),
                    }
                }
                Stmt::Reconfigure(r)
            }
            Rule::on_stmt => {
                let mount = match k.next() {
                    Some(n) => self.name(&n),
                    None => Spanned::new(String::new(), Span::default()),
                };
                let body = match k.next() {
                    Some(b) => self.stmt_block(&b),
                    None => Block::default(),
                };
                Stmt::On(OnBlock { mount, body })
            }
            Rule::remount_stmt => Stmt::Remount(k.next().map(|r| self.result(r))),
            Rule::if_stmt => Stmt::If(self.if_stmt(p)),
            Rule::as_stmt => Stmt::As(self.as_stmt(p)),
            Rule::expect_stmt => self.expect(p),
            Rule::op_stmt => Stmt::Op(self.op_stmt(p)),
            other => unreachable_rule(other),
        }
    }

    fn stmt_block(&mut self, p: &P<'_>) -> Block<Stmt> {
        self.block(p, true, Builder::stmt)
    }

    // -------------------------------------------------------------- tokens

    fn name(&mut self, p: &P<'_>) -> Name {
        Spanned::new(p.as_str().to_string(), self.span(p))
    }

    /// A `string` pair (or its absence, which the grammar rules out).
    fn string(&mut self, p: Option<P<'_>>) -> Text {
        let Some(p) = p else {
            return Spanned::new(Bytes::default(), Span::default());
        };
        let inner = p.clone().into_inner().next().unwrap_or(p.clone());
        self.literal(&inner)
    }

    /// A `quoted_string` or `triple_string` pair.
    fn literal(&mut self, p: &P<'_>) -> Text {
        let span = self.span(p);
        let s = p.as_str();
        let (bytes, err_base) = if p.as_rule() == Rule::triple_string {
            (unescape(&dedent(&s[3..s.len() - 3])), None)
        } else {
            (unescape(&s[1..s.len() - 1]), Some(span.start + 1))
        };
        match bytes {
            Ok(b) => Spanned::new(Bytes(b), span),
            Err(e) => {
                let at = match err_base {
                    Some(b) => (b + e.offset, b + e.offset + e.len),
                    None => (span.start, span.end),
                };
                self.diags.push(
                    Diag::new(ErrorKind::BadEscape, e.message, at, "in this string")
                        .with_help("escapes are \\n \\t \\r \\0 \\\\ \\\" and \\xHH"),
                );
                Spanned::new(Bytes::default(), span)
            }
        }
    }

    fn path(&mut self, p: P<'_>) -> PathRef {
        self.path_with(p, false)
    }

    /// An operation's path: it may end with `/`, which reaches the system
    /// call as written (`rmdir /a/`, `read /f/ => ENOTDIR`).
    fn op_path(&mut self, p: Option<P<'_>>) -> PathRef {
        match p {
            Some(x) => self.path_with(x, true),
            None => Spanned::new("/".into(), Span::default()),
        }
    }

    fn path_with(&mut self, p: P<'_>, trailing_slash: bool) -> PathRef {
        let span = self.span(&p);
        let inner = p.clone().into_inner().next().unwrap_or(p.clone());
        let text = if inner.as_rule() == Rule::quoted_string {
            let lit = self.literal(&inner);
            match String::from_utf8(lit.node.0) {
                Ok(s) => s,
                Err(_) => {
                    self.err(ErrorKind::BadPath, "path is not valid UTF-8", span, "here");
                    return Spanned::new("/".into(), span);
                }
            }
        } else {
            inner.as_str().to_string()
        };
        let checked = match text.strip_suffix('/') {
            Some(t) if trailing_slash && !t.is_empty() => t,
            _ => text.as_str(),
        };
        if let Some((msg, help)) = path_problem(checked) {
            self.help(ErrorKind::BadPath, msg, span, "this path", help);
        }
        Spanned::new(text, span)
    }

    fn mode(&mut self, p: &P<'_>) -> Spanned<Mode> {
        let span = self.span(p);
        let s = p.as_str();
        let value = if s.len() > 1 && s.starts_with('0') || s == "0" {
            match u32::from_str_radix(s, 8) {
                Ok(v) if v <= 0o7777 => Some(v),
                Ok(_) => {
                    self.help(
                        ErrorKind::BadMode,
                        format!("mode `{s}` is larger than 07777"),
                        span,
                        "too large",
                        "a mode holds permission bits and setuid/setgid/sticky: 0 to 07777",
                    );
                    None
                }
                Err(_) => {
                    self.help(
                        ErrorKind::BadMode,
                        format!("mode `{s}` is not an octal number"),
                        span,
                        "not octal",
                        "octal digits are 0 to 7",
                    );
                    None
                }
            }
        } else if !s.is_empty() && s.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
            self.help(
                ErrorKind::BadMode,
                format!("mode `{s}` needs a leading 0"),
                span,
                "read as decimal",
                format!("modes are octal: write `0{s}`"),
            );
            None
        } else {
            self.help(
                ErrorKind::BadMode,
                format!("`{s}` is not a mode"),
                span,
                "not a mode",
                "modes are octal with a leading 0, like 0644",
            );
            None
        };
        Spanned::new(Mode(value.unwrap_or(0)), span)
    }

    fn size(&mut self, p: &P<'_>) -> Spanned<Size> {
        let span = self.span(p);
        let s = p.as_str();
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (num, unit) = s.split_at(digits);
        let unit = match unit {
            "" => Some(SizeUnit::None),
            "B" => Some(SizeUnit::B),
            "KiB" => Some(SizeUnit::KiB),
            "MiB" => Some(SizeUnit::MiB),
            "GiB" => Some(SizeUnit::GiB),
            _ => None,
        };
        match unit {
            Some(unit) if !num.is_empty() => {
                let count = num.parse::<u64>().ok();
                if let Some((count, bytes)) = count.and_then(|c| c.checked_mul(unit.factor()).map(|b| (c, b))) {
                    return Spanned::new(Size { count, unit, bytes }, span);
                }
                self.help(
                    ErrorKind::BadSize,
                    format!("size `{s}` is too large"),
                    span,
                    "overflows",
                    "sizes are at most 2^64-1 bytes",
                );
            }
            _ => {
                self.help(
                    ErrorKind::BadSize,
                    format!("`{s}` is not a size"),
                    span,
                    "not a size",
                    "a size is a number with an optional unit: B, KiB, MiB or GiB (like 4KiB)",
                );
            }
        }
        Spanned::new(Size { count: 0, unit: SizeUnit::None, bytes: 0 }, span)
    }

    fn number(&mut self, p: &P<'_>, what: &str) -> Spanned<u64> {
        let span = self.span(p);
        match p.as_str().parse::<u64>() {
            Ok(v) => Spanned::new(v, span),
            Err(_) => {
                self.help(
                    ErrorKind::BadNumber,
                    format!("`{}` is not a valid {what}", p.as_str()),
                    span,
                    "not a number",
                    format!("the {what} is a decimal number"),
                );
                Spanned::new(0, span)
            }
        }
    }

    fn split_pair<'p>(p: &'p P<'_>) -> (&'p str, &'p str) {
        p.as_str().split_once(':').unwrap_or((p.as_str(), ""))
    }

    /// A `A:B` token checked by `ok`; on failure an error of `kind` with its help.
    fn pair<T>(
        &mut self,
        p: &P<'_>,
        ok: impl Fn(&str, &str) -> Option<T>,
        bad: (ErrorKind, &str, &str, &str),
        zero: T,
    ) -> Spanned<T> {
        let span = self.span(p);
        let (a, b) = Self::split_pair(p);
        match ok(a, b) {
            Some(v) => Spanned::new(v, span),
            None => {
                let (kind, what, label, help) = bad;
                self.help(kind, format!("`{}` is not a valid {what}", p.as_str()), span, label, help);
                Spanned::new(zero, span)
            }
        }
    }

    fn owner(&mut self, p: &P<'_>) -> Spanned<Owner> {
        let id = |s: &str| s.parse::<u32>().ok().filter(|&v| v != u32::MAX);
        self.pair(
            p,
            |u, g| Some(Owner { uid: id(u)?, gid: id(g)? }),
            (
                ErrorKind::BadOwner,
                "owner",
                "not UID:GID",
                "owners are numeric ids from 0 to 4294967294, written UID:GID (like 1000:1000)",
            ),
            Owner { uid: 0, gid: 0 },
        )
    }

    fn devnum(&mut self, p: &P<'_>) -> Spanned<DevNum> {
        let num = |s: &str, max: u32| s.parse::<u32>().ok().filter(|&v| v <= max);
        self.pair(
            p,
            |a, b| Some(DevNum { major: num(a, 4095)?, minor: num(b, 0xFFFFF)? }),
            (
                ErrorKind::BadDevice,
                "device number",
                "not MAJ:MIN",
                "device numbers are MAJOR:MINOR with major 0 to 4095 and minor 0 to 1048575",
            ),
            DevNum { major: 0, minor: 0 },
        )
    }

    fn version(&mut self, p: &P<'_>) -> Spanned<Version> {
        let span = self.span(p);
        let parts: Option<Vec<u32>> = p.as_str().split('.').map(|x| x.parse::<u32>().ok()).collect();
        match parts {
            Some(v) if !v.is_empty() && v.len() <= 3 => Spanned::new(Version(v), span),
            _ => {
                self.help(
                    ErrorKind::BadVersion,
                    format!("`{}` is not a kernel version", p.as_str()),
                    span,
                    "not a version",
                    "a kernel version is one to three numbers, like 5.11 or 6.7.3",
                );
                Spanned::new(Version(vec![0]), span)
            }
        }
    }

    fn backing(&mut self, p: Option<P<'_>>) -> Spanned<Backing> {
        self.one_of(
            p,
            &Backing::ALL,
            Backing::name,
            (ErrorKind::UnknownBacking, "backing filesystem", "the backing is one of"),
        )
    }

    /// A word naming one of `all` (by `name`); an unknown word is an error of
    /// `kind` ("unknown WHAT `x`", help "LIST tmpfs, ext4, ...") and gives the first.
    fn one_of<T: Copy>(
        &mut self,
        p: Option<P<'_>>,
        all: &[T],
        name: fn(T) -> &'static str,
        (kind, what, list): (ErrorKind, &str, &str),
    ) -> Spanned<T> {
        let Some(p) = p else { return Spanned::new(all[0], Span::default()) };
        let span = self.span(&p);
        match all.iter().find(|x| name(**x) == p.as_str()) {
            Some(x) => Spanned::new(*x, span),
            None => {
                let names: Vec<&str> = all.iter().map(|x| name(*x)).collect();
                self.help(
                    kind,
                    format!("unknown {what} `{}`", p.as_str()),
                    span,
                    format!("not a {what}"),
                    format!("{list} {}", names.join(", ")),
                );
                Spanned::new(all[0], span)
            }
        }
    }

    fn mount_opt(&mut self, p: &P<'_>) -> MountOpt {
        let span = self.span(p);
        let mut k = p.clone().into_inner();
        let name = k.next().map(|n| n.as_str().to_string()).unwrap_or_default();
        let value = k.next().map(|v| v.as_str().to_string());
        self.safe_option(&name, value.as_deref(), span);
        MountOpt { name, value, span }
    }

    /// An option ovlc passes on (`with`, `vary`, `param`, `reconfigure`) may
    /// not name a directory: the layers, upper and work directory are ovlc's
    /// to give, and a path could be one of the host's.
    fn safe_option(&mut self, name: &str, value: Option<&str>, span: Span) {
        if let Some(why) = option_escape(name, value) {
            self.help(
                ErrorKind::BadPath,
                format!("option `{name}` {why}"),
                span,
                "not an option ovlc passes on",
                "layers, the upper and the work directory are the mount's own clauses (`mount LOWERS upper NAME \
                 work NAME`); option values hold no `/` or `\\`",
            );
        }
    }

    // -------------------------------------------------------------- header

    fn vary_axis(&mut self, p: P<'_>) -> VaryAxis {
        let mut k = p.into_inner();
        let name = k.next().map(|n| self.name(&n)).unwrap_or_else(|| Spanned::new(String::new(), Span::default()));
        let values: Vec<Name> = k.map(|v| self.name(&v)).collect();
        for v in &values {
            self.safe_option(&name.node, Some(&v.node), v.span);
        }
        VaryAxis { name, values }
    }

    fn cond(&mut self, p: P<'_>) -> Cond {
        let rule = p.as_rule();
        match rule {
            Rule::cond => self.fold(p, Cond::Or),
            Rule::cond_and => self.fold(p, Cond::And),
            Rule::cond_not => {
                let inner = kids(&p).next();
                match inner {
                    Some(i) if i.as_rule() == Rule::cond_not => Cond::Not(Box::new(self.cond(i))),
                    Some(i) => self.cond(i),
                    None => Cond::Not(Box::new(Cond::Option(MountOpt {
                        name: String::new(),
                        value: None,
                        span: Span::default(),
                    }))),
                }
            }
            Rule::cond_kernel => {
                let mut k = kids(&p);
                let op = k.next().map(|o| cmp_op(o.as_str())).unwrap_or(CmpOp::Eq);
                let version = match k.next() {
                    Some(v) => self.version(&v),
                    None => Spanned::new(Version(vec![0]), Span::default()),
                };
                Cond::Kernel { op, version }
            }
            Rule::cond_driver => {
                let mut k = kids(&p);
                let (op_text, op_span) = k.next().map(|o| (o.as_str().to_string(), self.span(&o))).unwrap_or_default();
                let equal = match op_text.as_str() {
                    "==" => true,
                    "!=" => false,
                    other => {
                        self.help(
                            ErrorKind::Syntax,
                            format!("a driver cannot be compared with `{other}`"),
                            op_span,
                            "not == or !=",
                            "write `driver == NAME` or `driver != NAME`",
                        );
                        true
                    }
                };
                Cond::Driver { equal, driver: self.driver(k.next()) }
            }
            Rule::cond_option | Rule::cond_param => {
                let opt = match kids(&p).next() {
                    Some(o) => self.mount_opt(&o),
                    None => MountOpt { name: String::new(), value: None, span: Span::default() },
                };
                if rule == Rule::cond_param {
                    Cond::Param(opt)
                } else {
                    Cond::Option(opt)
                }
            }
            other => unreachable_rule(other),
        }
    }

    fn fold(&mut self, p: P<'_>, join: fn(Box<Cond>, Box<Cond>) -> Cond) -> Cond {
        let mut k = kids(&p);
        let Some(first) = k.next() else {
            return Cond::Option(MountOpt { name: String::new(), value: None, span: Span::default() });
        };
        let mut acc = self.cond(first);
        for next in k {
            let rhs = self.cond(next);
            acc = join(Box::new(acc), Box::new(rhs));
        }
        acc
    }

    // -------------------------------------------------------------- layers

    /// A layer's name: an identifier, or a quoted string naming a directory.
    fn lname(&mut self, p: &P<'_>) -> Name {
        if p.as_rule() != Rule::quoted_string {
            return self.name(p);
        }
        let lit = self.literal(p);
        let name = String::from_utf8_lossy(lit.node.as_slice()).into_owned();
        let bad = if std::str::from_utf8(lit.node.as_slice()).is_err() {
            Some("is not UTF-8")
        } else if name.is_empty() || name == "." || name == ".." {
            Some("is empty, `.` or `..`")
        } else if name.contains('/') || name.contains('\0') {
            Some("holds a `/` or a NUL")
        } else if name.len() > 255 {
            Some("is over 255 bytes")
        } else {
            None
        };
        if let Some(why) = bad {
            self.help(
                ErrorKind::BadPath,
                format!("layer name `{}` {why}", brief(&name)),
                lit.span,
                "not a directory name",
                "a layer's name is its directory's name: up to 255 bytes, any but `/` and NUL, not `.` or `..`",
            );
        }
        Spanned::new(name, lit.span)
    }

    fn layer(&mut self, p: P<'_>) -> Layer {
        let mut k = kids(&p);
        let name = match k.next() {
            Some(n) => self.lname(&n),
            None => Spanned::new(String::new(), Span::default()),
        };
        let mut next = k.next();
        let mut on = None;
        if let Some(o) = next.as_ref().filter(|o| o.as_rule() == Rule::layer_on) {
            on = kids(o).next().map(|n| self.name(&n));
            next = k.next();
        }
        let source = match next {
            Some(b) if b.as_rule() == Rule::layer_body => LayerSource::Entries(self.block(&b, true, Builder::entry)),
            Some(f) => {
                let lit = self.string(kids(&f).next());
                let text = String::from_utf8_lossy(lit.node.as_slice()).into_owned();
                LayerSource::Tar(Spanned::new(text, lit.span))
            }
            None => LayerSource::Entries(Block::default()),
        };
        Layer { name, on, source }
    }

    fn edit(&mut self, p: P<'_>) -> Edit {
        let (mut upper_kw, mut work_kw) = (false, None);
        let (mut layer, mut upper) = (None, None);
        let mut items = Block::default();
        for k in p.into_inner() {
            match k.as_rule() {
                Rule::kw_upper => upper_kw = true,
                Rule::kw_work => work_kw = Some(Spanned::new(String::new(), self.span(&k))),
                Rule::ident if work_kw.is_some() => work_kw = Some(self.name(&k)),
                Rule::ident if upper_kw => upper = Some(self.name(&k)),
                Rule::ident | Rule::quoted_string => layer = Some(self.lname(&k)),
                Rule::edit_body => items = self.block(&k, true, Builder::edit_item),
                _ => {}
            }
        }
        Edit { layer, upper, work: work_kw, items }
    }

    fn edit_item(&mut self, p: P<'_>) -> EditItem {
        let rule = p.as_rule();
        let mut k = kids(&p);
        match rule {
            Rule::ed_remove => EditItem::Remove(self.opt_path(k.next())),
            Rule::ed_attrs => {
                let path = self.opt_path(k.next());
                EditItem::Attrs { path, changes: self.attr_changes(k.collect()) }
            }
            Rule::ed_xattr => {
                let path = self.opt_path(k.next());
                let name = self.xattr_name(k.next());
                EditItem::Xattr { path, name, value: self.xattr_value(k.next()) }
            }
            Rule::ed_no_xattr => {
                let path = self.opt_path(k.next());
                EditItem::NoXattr { path, name: self.xattr_name(k.next()) }
            }
            _ => EditItem::Entry(self.entry(p)),
        }
    }

    fn attrs(&mut self, p: &P<'_>, attrs: &mut Attrs, size: Option<&mut Option<Spanned<Size>>>) -> bool {
        let span = self.span(p);
        match p.as_rule() {
            Rule::mode_attr => {
                let m = kids(p).next().map(|w| self.mode(&w));
                if attrs.mode.is_some() {
                    self.err(ErrorKind::Conflict, "`mode` is given twice", span, "second `mode`");
                }
                attrs.mode = m;
            }
            Rule::owner_attr => {
                let o = kids(p).next().map(|w| self.owner(&w));
                if attrs.owner.is_some() {
                    self.err(ErrorKind::Conflict, "`owner` is given twice", span, "second `owner`");
                }
                attrs.owner = o;
            }
            Rule::xattr_attr => {
                let mut k = kids(p);
                let name = k.next().map(|n| self.xattr_name(Some(n)));
                let value = self.xattr_value(k.next());
                if let Some(name) = name {
                    attrs.xattrs.push(Xattr { name, value });
                }
            }
            Rule::flags_attr => {
                let f = self.attr_changes(kids(p).collect());
                if attrs.flags.is_some() {
                    self.err(ErrorKind::Conflict, "`attrs` is given twice", span, "second `attrs`");
                }
                if f.node.iter().any(|c| !c.set) {
                    self.help(
                        ErrorKind::Conflict,
                        "a layer entry's `attrs` sets flags",
                        span,
                        "a `-` here",
                        "a new entry has no flags to clear: list the ones to set (`attrs +i +a`)",
                    );
                }
                attrs.flags = Some(f);
            }
            Rule::size_attr => {
                let s = kids(p).next().map(|w| self.size(&w));
                if let Some(slot) = size {
                    if slot.is_some() {
                        self.err(ErrorKind::Conflict, "`size` is given twice", span, "second `size`");
                    }
                    *slot = s;
                }
            }
            _ => return false,
        }
        true
    }

    fn entry(&mut self, p: P<'_>) -> Entry {
        let rule = p.as_rule();
        let mut k = kids(&p);
        let path = match k.next() {
            Some(x) => self.path(x),
            None => Spanned::new("/".into(), Span::default()),
        };
        let mut attrs = Attrs::default();
        let kind = match rule {
            Rule::e_file => {
                let mut content = None;
                let mut size = None;
                let mut sparse = None;
                let mut verity = false;
                for c in k {
                    if c.as_rule() == Rule::string {
                        content = Some(self.string(Some(c)));
                    } else if c.as_rule() == Rule::verity_flag {
                        verity = true;
                    } else if c.as_rule() == Rule::sparse_flag {
                        sparse = Some(self.span(&c));
                    } else {
                        self.attrs(&c, &mut attrs, Some(&mut size));
                    }
                }
                if let (Some(c), Some(s)) = (&content, &size) {
                    if c.node.len() as u64 != s.node.bytes {
                        self.diags.push(
                            Diag::new(
                                ErrorKind::Conflict,
                                format!("`size {}` does not match the content's {} bytes", s.node, c.node.len()),
                                (s.span.start, s.span.end),
                                "this size",
                            )
                            .with_related((c.span.start, c.span.end), "this content")
                            .with_help(
                                "give the content or a size, not both: a size alone fills the file with a pattern",
                            ),
                        );
                    }
                }
                if let Some(at) = sparse {
                    if content.is_some() || size.is_none() {
                        self.help(
                            ErrorKind::Conflict,
                            "`sparse` needs a `size` and no content",
                            at,
                            "here",
                            "a sparse file is all hole: `file /f size 1GiB sparse`",
                        );
                    }
                }
                EntryKind::File { content, size, sparse: sparse.is_some(), verity }
            }
            Rule::e_dir => {
                let mut opaque = false;
                for c in k {
                    if c.as_rule() == Rule::opaque_flag {
                        opaque = true;
                    } else {
                        self.attrs(&c, &mut attrs, None);
                    }
                }
                EntryKind::Dir { opaque }
            }
            Rule::e_symlink => {
                let before = self.diags.len();
                let target = self.string(k.next());
                if self.diags.len() == before {
                    self.symlink_target(&target);
                }
                for c in k {
                    self.attrs(&c, &mut attrs, None);
                }
                EntryKind::Symlink { target }
            }
            Rule::e_hardlink => {
                let target = match k.next() {
                    Some(t) => self.path(t),
                    None => Spanned::new("/".into(), Span::default()),
                };
                EntryKind::Hardlink { target }
            }
            Rule::e_fifo | Rule::e_whiteout | Rule::e_socket => {
                for c in k {
                    self.attrs(&c, &mut attrs, None);
                }
                match rule {
                    Rule::e_fifo => EntryKind::Fifo,
                    Rule::e_socket => EntryKind::Socket,
                    _ => EntryKind::Whiteout,
                }
            }
            Rule::e_device => {
                let kind = dev_kind(k.next().map(|d| d.as_str()).unwrap_or("char"));
                let dev = match k.next() {
                    Some(d) => self.devnum(&d),
                    None => Spanned::new(DevNum { major: 0, minor: 0 }, Span::default()),
                };
                for c in k {
                    self.attrs(&c, &mut attrs, None);
                }
                EntryKind::Device { kind, dev }
            }
            other => unreachable_rule(other),
        };
        Entry { path, kind, attrs }
    }

    // -------------------------------------------------------------- mounts

    fn mount(&mut self, p: P<'_>) -> Mount {
        let mut m = Mount {
            lowers: vec![],
            data: vec![],
            upper: None,
            upper_on: None,
            work: None,
            name: None,
            options: vec![],
            readonly: false,
            upper_from: None,
            raw: None,
            driver: None,
            via: None,
            result: None,
        };
        let mut with_seen: Option<Span> = None;
        for c in kids(&p) {
            let span = self.span(&c);
            match c.as_rule() {
                Rule::layer_list => m.lowers = kids(&c).map(|n| self.dir_ref(n)).collect(),
                Rule::data_layers => m.data = kids(&c).map(|n| self.dir_ref(n)).collect(),
                Rule::upper_dir | Rule::work_dir | Rule::mount_name => {
                    let rule = c.as_rule();
                    let (given, word) = match rule {
                        Rule::upper_dir => (m.upper.is_some(), "upper"),
                        Rule::work_dir => (m.work.is_some(), "work"),
                        _ => (m.name.is_some(), "as"),
                    };
                    if given {
                        self.err(
                            ErrorKind::Conflict,
                            format!("`{word}` is given twice"),
                            span,
                            format!("second `{word}`"),
                        );
                    }
                    if let Some(n) = kids(&c).next() {
                        if let Some(o) = kids(&c).nth(1) {
                            m.upper_on = kids(&o).next().map(|n| self.name(&n));
                        }
                        match rule {
                            Rule::upper_dir => m.upper = Some(self.dir_ref(n)),
                            Rule::work_dir => m.work = Some(self.dir_ref(n)),
                            _ => m.name = Some(self.name(&n)),
                        }
                    }
                }
                Rule::mount_with => {
                    if with_seen.is_some() {
                        self.help(
                            ErrorKind::Conflict,
                            "`with` is given twice",
                            span,
                            "second `with`",
                            "list every option after one `with`, separated by commas",
                        );
                    }
                    with_seen = Some(span);
                    let opts: Vec<MountOpt> = kids(&c).map(|o| self.mount_opt(&o)).collect();
                    m.options.extend(opts);
                }
                Rule::readonly_flag => {
                    if m.readonly {
                        self.err(ErrorKind::Conflict, "`readonly` is given twice", span, "second `readonly`");
                    }
                    m.readonly = true;
                }
                Rule::upper_from => {
                    if m.upper_from.is_some() {
                        self.err(ErrorKind::Conflict, "`upper from` is given twice", span, "second `upper from`");
                    }
                    m.upper_from = kids(&c).next().map(|n| self.lname(&n));
                }
                Rule::mount_driver => {
                    if m.driver.is_some() {
                        self.err(ErrorKind::Conflict, "`driver` is given twice", span, "second `driver`");
                    }
                    m.driver = Some(self.driver(kids(&c).next()));
                }
                Rule::mount_raw => {
                    if m.raw.is_some() {
                        self.err(ErrorKind::Conflict, "`options` is given twice", span, "second `options`");
                    }
                    let raw = self.string(kids(&c).next());
                    // Made from the layers' directory: a value with `/` or a
                    // `..` could name a directory of the host.
                    if raw_options_escape(&String::from_utf8_lossy(raw.node.as_slice())) {
                        self.help(
                            ErrorKind::BadPath,
                            "`options` names directories by layer names only",
                            raw.span,
                            "a path here",
                            "the string goes to mount(2) from the instance's layers directory: name a layer \
                             (`lowerdir+=other`), with no `/`, `.` or `..`",
                        );
                    }
                    m.raw = Some(raw);
                }
                Rule::mount_via => {
                    if m.via.is_some() {
                        self.err(ErrorKind::Conflict, "`via` is given twice", span, "second `via`");
                    }
                    m.via = Some(match kids(&c).next().map(|v| v.as_str()) {
                        Some("append") => Via::Append,
                        Some("fd") => Via::Fd,
                        Some("legacy") => Via::Legacy,
                        _ => Via::String,
                    });
                }
                Rule::result => m.result = Some(self.result(c)),
                other => unreachable_rule(other),
            }
        }
        if let (Some(r), Some(v)) = (&m.raw, m.via.filter(|v| *v != Via::Legacy)) {
            self.help(
                ErrorKind::Conflict,
                format!("`options` goes to mount(2) as one string, not `via {}`", v.name()),
                r.span,
                "`options` here",
                "remove `via`: a mount with `options` is always made with mount(2)",
            );
        }
        if m.readonly {
            let clauses = [
                m.upper_from.as_ref().map(|u| (u.span, "`upper from`")),
                m.upper.as_ref().map(|u| (u.span(), "`upper`")),
                m.work.as_ref().map(|w| (w.span(), "`work`")),
            ];
            for (span, word) in clauses.into_iter().flatten() {
                self.help(
                    ErrorKind::Conflict,
                    "a `readonly` mount has no upper layer",
                    span,
                    format!("{word} here"),
                    format!("remove `readonly`, or remove {word}"),
                );
            }
        }
        m
    }

    /// `+i -a ...`: inode flags by chattr(1)'s letters, each once.
    fn attr_changes(&mut self, parts: Vec<P<'_>>) -> Spanned<Vec<AttrChange>> {
        let span = match (parts.first(), parts.last()) {
            (Some(a), Some(b)) => Span { end: self.span(b).end, ..self.span(a) },
            _ => Span::default(),
        };
        let mut out: Vec<AttrChange> = Vec::new();
        for p in parts {
            let s = p.as_str();
            let pspan = self.span(&p);
            let letter = s.chars().nth(1).unwrap_or(' ');
            let Some(flag) = InodeFlag::ALL.iter().copied().find(|f| f.letter() == letter) else {
                self.help(
                    ErrorKind::BadMode,
                    format!("unknown inode flag `{s}`"),
                    pspan,
                    "not a flag",
                    "inode flags are chattr(1)'s i (immutable), a (append only), A (no atime), S (sync), d (no dump)",
                );
                continue;
            };
            if out.iter().any(|c| c.flag == flag) {
                self.err(ErrorKind::Conflict, format!("flag `{letter}` is given twice"), pspan, "again");
                continue;
            }
            out.push(AttrChange { set: s.starts_with('+'), flag });
        }
        Spanned::new(out, span)
    }

    /// A pause: `10ms` or `1s`, at most 10 s.
    fn millis(&mut self, p: Option<P<'_>>) -> Spanned<u64> {
        let Some(p) = p else { return Spanned::new(0, Span::default()) };
        let span = self.span(&p);
        let s = p.as_str();
        let parsed = match (s.strip_suffix("ms"), s.strip_suffix('s')) {
            (Some(n), _) => n.parse::<u64>().ok(),
            (None, Some(n)) => n.parse::<u64>().ok().and_then(|n| n.checked_mul(1000)),
            _ => None,
        };
        match parsed.filter(|m| *m <= 10_000) {
            Some(m) => Spanned::new(m, span),
            None => {
                self.help(
                    ErrorKind::BadNumber,
                    format!("`{s}` is no pause of at most 10 s"),
                    span,
                    "not a pause",
                    "write milliseconds or seconds: `sleep 20ms`, `sleep 1s` (at most 10 s)",
                );
                Spanned::new(0, span)
            }
        }
    }

    /// `[default] "ACL"`: whether it is the default ACL, and the ACL.
    fn acl(&mut self, parts: Vec<P<'_>>) -> (bool, Spanned<crate::acl::Acl>) {
        let default = parts.iter().any(|p| p.as_rule() == Rule::default_flag);
        let text = self.string(parts.into_iter().find(|p| p.as_rule() == Rule::string));
        let s = String::from_utf8_lossy(text.node.as_slice()).into_owned();
        let acl = match crate::acl::Acl::parse(&s) {
            Ok(a) => a,
            Err(why) => {
                self.help(
                    ErrorKind::BadMode,
                    format!("malformed ACL: {why}"),
                    text.span,
                    "this ACL",
                    "an ACL is like \"u::rw-,u:1000:r--,g::r--,m::r--,o::---\" (u, g, m, o; an id for u: and g: entries)",
                );
                crate::acl::Acl(Vec::new())
            }
        };
        (default, Spanned::new(acl, text.span))
    }

    /// A driver's name: `kernel`, `rootless` or `fuse`.
    fn driver(&mut self, name: Option<P<'_>>) -> Spanned<Driver> {
        self.one_of(name, &Driver::ALL, Driver::name, (ErrorKind::UnknownDriver, "driver", "drivers are"))
    }

    /// `LAYER:/path`: the layer's name and the path.
    fn layer_path(&mut self, p: P<'_>) -> (Name, PathRef) {
        let mut k = p.into_inner();
        let layer = match k.next() {
            Some(n) => self.lname(&n),
            None => Spanned::new(String::new(), Span::default()),
        };
        // An operation's path: a trailing `/` is kept, as in the system call.
        (layer, self.op_path(k.next()))
    }

    /// A layer or named upper (`base`), or a directory inside a mount (`m1:/u`).
    fn dir_ref(&mut self, p: P<'_>) -> DirRef {
        if p.as_rule() != Rule::in_mount {
            return DirRef::Name(self.lname(&p));
        }
        let mut k = p.into_inner();
        let mount = match k.next() {
            Some(n) => self.lname(&n),
            None => Spanned::new(String::new(), Span::default()),
        };
        DirRef::InMount { mount, path: self.opt_path(k.next()) }
    }

    /// An errno name, checked against the ones Linux has.
    fn errno(&mut self, v: &P<'_>) -> String {
        let name = v.as_str();
        if errno::code(name).is_none() {
            let vspan = self.span(v);
            let help = match errno::closest(name) {
                Some(c) => format!("did you mean `{c}`?"),
                None => "a result is `ok`, a Linux errno name (ENOENT, EXDEV, ...), `error`, a string or a list".into(),
            };
            self.help(ErrorKind::UnknownErrno, format!("unknown errno name `{name}`"), vspan, "not an errno", help);
        }
        name.to_string()
    }

    fn result(&mut self, p: P<'_>) -> Outcome {
        let span = self.span(&p);
        let Some(v) = kids(&p).next() else { return Spanned::new(Expected::Ok, span) };
        let value = match v.as_rule() {
            Rule::ok_result => Expected::Ok,
            Rule::string => Expected::Text(self.string(Some(v)).node),
            Rule::name_list => Expected::List(
                kids(&v)
                    .map(|n| {
                        let inner = n.clone().into_inner().next().unwrap_or(n.clone());
                        if inner.as_rule() == Rule::quoted_string {
                            self.literal(&inner).node
                        } else {
                            Bytes::from(inner.as_str())
                        }
                    })
                    .collect(),
            ),
            Rule::any_error => Expected::AnyError,
            Rule::any_result => Expected::Any,
            Rule::open_result => Expected::Open,
            Rule::errno => Expected::Errno(self.errno(&v)),
            Rule::errno_set => Expected::OneOf(kids(&v).map(|e| self.errno(&e)).collect()),
            other => unreachable_rule(other),
        };
        Spanned::new(value, span)
    }

    // -------------------------------------------------------------- control

    fn if_stmt(&mut self, p: P<'_>) -> IfStmt {
        let mut branches = Vec::new();
        let mut otherwise = None;
        let mut cur = p;
        loop {
            let mut k = kids(&cur);
            let cond = match k.next() {
                Some(c) => self.cond(c),
                None => break,
            };
            let body = match k.next() {
                Some(b) => self.stmt_block(&b),
                None => Block::default(),
            };
            branches.push((cond, body));
            let Some(els) = k.next() else { break };
            match kids(&els).next() {
                Some(next) if next.as_rule() == Rule::if_stmt => cur = next,
                Some(block) => {
                    otherwise = Some(self.stmt_block(&block));
                    break;
                }
                None => break,
            }
        }
        IfStmt { branches, otherwise }
    }

    fn as_stmt(&mut self, p: P<'_>) -> AsBlock {
        let mut k = kids(&p);
        let owner = match k.next() {
            Some(o) => self.owner(&o),
            None => Spanned::new(Owner { uid: 0, gid: 0 }, Span::default()),
        };
        let mut userns = false;
        let mut body = Block::default();
        for b in k {
            if b.as_rule() == Rule::userns_flag {
                userns = true;
            } else {
                body = self.block(&b, true, |s: &mut Self, op| Stmt::Op(s.op_stmt(op)));
            }
        }
        AsBlock { owner, userns, body }
    }

    // -------------------------------------------------------------- operations

    fn op_stmt(&mut self, p: P<'_>) -> OpStmt {
        let mut k = kids(&p);
        let op = match k.next() {
            Some(o) => self.op(o),
            None => Op::Sync,
        };
        let result = k.next().map(|r| self.result(r));
        OpStmt { op, result }
    }

    fn op(&mut self, p: P<'_>) -> Op {
        let rule = p.as_rule();
        match rule {
            Rule::o_drop_caches => return Op::DropCaches,
            Rule::o_sleep => return Op::Sleep { millis: self.millis(kids(&p).next()) },
            Rule::o_sync => return Op::Sync,
            _ => {}
        }
        let parts: Vec<P<'_>> = kids(&p).collect();
        if let Some(op) = self.fd_op(rule, &parts) {
            return op;
        }
        if let Some(op) = self.inode_op(rule, &parts) {
            return op;
        }
        if rule == Rule::o_chattr && parts.first().is_some_and(Self::is_descriptor) {
            let fd = Spanned::new(parts[0].as_str().to_string(), self.span(&parts[0]));
            return Op::FdChattr { fd, changes: self.attr_changes(parts[1..].to_vec()) };
        }
        if rule == Rule::o_measure && parts.first().is_some_and(|p| p.as_rule() == Rule::layer_path) {
            let (layer, path) = self.layer_path(parts[0].clone());
            return Op::Measure { path, layer: Some(layer) };
        }
        if rule == Rule::o_stat && parts.first().is_some_and(|p| p.as_rule() == Rule::layer_path) {
            let (layer, path) = self.layer_path(parts[0].clone());
            return Op::Stat { path, name: self.opt_name(parts.get(1).cloned()), layer: Some(layer) };
        }
        let mut it = parts.into_iter();
        let first = self.op_path(it.next());
        match rule {
            Rule::o_write => {
                let data = self.string(it.next());
                self.descriptor_only(it.next(), "write", "`at OFFSET`");
                Op::Write { path: first, data }
            }
            Rule::o_append => Op::Append { path: first, data: self.string(it.next()) },
            Rule::o_create => Op::Create { path: first },
            Rule::o_truncate => {
                let size = match it.next() {
                    Some(w) => self.size(&w),
                    None => Spanned::new(Size { count: 0, unit: SizeUnit::None, bytes: 0 }, Span::default()),
                };
                Op::Truncate { path: first, size }
            }
            Rule::o_read => {
                for extra in it {
                    let what = if extra.as_rule() == Rule::at_clause { "`at OFFSET`" } else { "a size" };
                    self.descriptor_only(Some(extra), "read", what);
                }
                Op::Read { path: first }
            }
            Rule::o_readlink => Op::Readlink { path: first },
            Rule::o_measure => Op::Measure { path: first, layer: None },
            Rule::o_readdir => {
                self.descriptor_only(it.next(), "readdir", "`max N`");
                Op::Readdir { path: first }
            }
            Rule::o_mkdir => {
                let mode = it.next().and_then(|m| kids(&m).next()).map(|w| self.mode(&w));
                Op::Mkdir { path: first, mode }
            }
            Rule::o_rmdir => Op::Rmdir { path: first },
            Rule::o_unlink => Op::Unlink { path: first },
            Rule::o_rename => {
                let to = self.op_path(it.next());
                let flag = it.next().map(|f| match f.as_str() {
                    "noreplace" => RenameFlag::Noreplace,
                    "exchange" => RenameFlag::Exchange,
                    _ => RenameFlag::Whiteout,
                });
                Op::Rename { from: first, to, flag }
            }
            Rule::o_link => Op::Link { from: first, to: self.op_path(it.next()) },
            Rule::o_symlink => Op::Symlink { path: first, target: self.string(it.next()) },
            Rule::o_mknod => {
                let a = it.next();
                let span = a.as_ref().map(|x| self.span(x)).unwrap_or_default();
                let node = match a {
                    Some(x) if x.as_rule() == Rule::dev_kind => {
                        let dev = match it.next() {
                            Some(d) => self.devnum(&d).node,
                            None => DevNum { major: 0, minor: 0 },
                        };
                        if x.as_str() == "char" {
                            NodeKind::Char(dev)
                        } else {
                            NodeKind::Block(dev)
                        }
                    }
                    Some(x) if x.as_rule() == Rule::socket_flag => NodeKind::Socket,
                    _ => NodeKind::Fifo,
                };
                Op::Mknod { path: first, node: Spanned::new(node, span) }
            }
            Rule::o_chmod => {
                let mode = match it.next() {
                    Some(w) => self.mode(&w),
                    None => Spanned::new(Mode(0), Span::default()),
                };
                Op::Chmod { path: first, mode }
            }
            Rule::o_chown => {
                let owner = match it.next() {
                    Some(w) => self.owner(&w),
                    None => Spanned::new(Owner { uid: 0, gid: 0 }, Span::default()),
                };
                Op::Chown { path: first, owner }
            }
            Rule::o_touch => Op::Touch { path: first },
            Rule::o_setxattr => {
                let name = self.xattr_name(it.next());
                Op::Setxattr { path: first, name, value: self.xattr_value(it.next()) }
            }
            Rule::o_removexattr => Op::Removexattr { path: first, name: self.xattr_name(it.next()) },
            Rule::o_getxattr => Op::Getxattr { path: first, name: self.xattr_name(it.next()) },
            Rule::o_stat => Op::Stat { path: first, name: self.opt_name(it.next()), layer: None },
            Rule::o_handle => Op::Handle { path: first, name: self.opt_name(it.next()) },
            Rule::o_chattr => Op::Chattr { path: first, changes: self.attr_changes(it.collect()) },
            Rule::o_setacl => {
                let (default, acl) = self.acl(it.collect());
                Op::Setacl { path: first, default, acl }
            }
            Rule::o_same_inode => Op::SameInode { path: first, name: self.opt_name(it.next()) },
            other => unreachable_rule(other),
        }
    }

    /// A clause that only a descriptor takes, after a path: an error.
    fn descriptor_only(&mut self, clause: Option<P<'_>>, op: &str, what: &str) {
        if let Some(c) = clause {
            let span = self.span(&c);
            self.help(
                ErrorKind::NeedsDescriptor,
                format!("`{op}` on a path takes no {what}"),
                span,
                "only through a descriptor",
                format!("open the file first: `open PATH as f rdwr`, then `{op} f ...`"),
            );
        }
    }

    /// Is this `path` token a descriptor's name (a bare identifier, not `/...`)?
    fn is_descriptor(p: &P<'_>) -> bool {
        let inner = p.clone().into_inner().next().unwrap_or(p.clone());
        let s = inner.as_str();
        inner.as_rule() == Rule::bare_path
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    fn opt_size(&mut self, p: Option<&P<'_>>) -> Spanned<Size> {
        match p {
            Some(w) => self.size(w),
            None => Spanned::new(Size { count: 0, unit: SizeUnit::None, bytes: 0 }, Span::default()),
        }
    }

    /// The size inside an `at`, `max` or read-size clause.
    fn clause_size(&mut self, p: &P<'_>) -> Spanned<Size> {
        let inner = kids(p).next();
        self.opt_size(inner.as_ref())
    }

    /// The operations on descriptors, and `open`; `None` for the others.
    fn fd_op(&mut self, rule: Rule, parts: &[P<'_>]) -> Option<Op> {
        let fd_first = matches!(rule, Rule::o_write | Rule::o_read | Rule::o_readdir);
        if fd_first && !parts.first().is_some_and(Self::is_descriptor) {
            return None;
        }
        let name = |b: &mut Self, i: usize| b.opt_name(parts.get(i).cloned());
        let clause = |r: Rule| parts.iter().find(|x| x.as_rule() == r);
        let op = match rule {
            Rule::o_open_handle => {
                let handle = name(self, 0);
                let fd = name(self, 1);
                let flags = self.open_flags(parts.get(2));
                Op::OpenHandle { handle, fd, flags }
            }
            Rule::o_open => {
                let path = self.op_path(parts.first().cloned());
                let fd = name(self, 1);
                let flags = self.open_flags(parts.get(2));
                let mode = clause(Rule::mode_attr).and_then(|m| kids(m).next()).map(|w| self.mode(&w));
                Op::Open { path, fd, flags, mode }
            }
            Rule::o_write => {
                let fd = Spanned::new(parts[0].as_str().to_string(), self.span(&parts[0]));
                let data = self.string(parts.get(1).cloned());
                let at = clause(Rule::at_clause).map(|c| self.clause_size(c));
                Op::FdWrite { fd, data, at }
            }
            Rule::o_read => {
                let fd = Spanned::new(parts[0].as_str().to_string(), self.span(&parts[0]));
                let size = clause(Rule::read_size).map(|c| self.clause_size(c));
                let at = clause(Rule::at_clause).map(|c| self.clause_size(c));
                Op::FdRead { fd, size, at }
            }
            Rule::o_readdir => {
                let fd = Spanned::new(parts[0].as_str().to_string(), self.span(&parts[0]));
                let max = clause(Rule::max_clause).and_then(|c| kids(c).next()).map(|w| self.number(&w, "entry count"));
                Op::FdReaddir { fd, max }
            }
            Rule::o_close => Op::Close { fd: name(self, 0) },
            Rule::o_rewind => Op::Rewind { fd: name(self, 0) },
            Rule::o_fsync => Op::Fsync { fd: name(self, 0) },
            Rule::o_fdatasync => Op::Fdatasync { fd: name(self, 0) },
            Rule::o_ftruncate => Op::Ftruncate { fd: name(self, 0), size: self.opt_size(parts.get(1)) },
            Rule::o_fchmod => {
                let mode = match parts.get(1) {
                    Some(w) => self.mode(w),
                    None => Spanned::new(Mode(0), Span::default()),
                };
                Op::Fchmod { fd: name(self, 0), mode }
            }
            Rule::o_fchown => {
                let owner = match parts.get(1) {
                    Some(w) => self.owner(w),
                    None => Spanned::new(Owner { uid: 0, gid: 0 }, Span::default()),
                };
                Op::Fchown { fd: name(self, 0), owner }
            }
            Rule::o_fsetxattr => {
                let xname = self.xattr_name(parts.get(1).cloned());
                Op::Fsetxattr { fd: name(self, 0), name: xname, value: self.xattr_value(parts.get(2).cloned()) }
            }
            Rule::o_fgetxattr => Op::Fgetxattr { fd: name(self, 0), name: self.xattr_name(parts.get(1).cloned()) },
            Rule::o_fstat => Op::Fstat { fd: name(self, 0), name: name(self, 1) },
            Rule::o_fallocate => {
                let mode = clause(Rule::falloc_mode).map(|m| {
                    if m.as_str() == "keep-size" {
                        FallocMode::KeepSize
                    } else {
                        FallocMode::PunchHole
                    }
                });
                let (offset, len) = (self.opt_size(parts.get(1)), self.opt_size(parts.get(2)));
                Op::Fallocate { fd: name(self, 0), offset, len, mode }
            }
            Rule::o_flock => {
                let how = match clause(Rule::flock_how).map(|h| h.as_str()) {
                    Some("sh") => FlockHow::Shared,
                    Some("ex") => FlockHow::Exclusive,
                    _ => FlockHow::Unlock,
                };
                Op::Flock { fd: name(self, 0), how, nonblock: clause(Rule::nb_flag).is_some() }
            }
            Rule::o_mmap => {
                let fd = name(self, 0);
                let Some(how) = parts.get(1) else { return Some(Op::Sync) };
                let inner: Vec<P<'_>> = kids(how).collect();
                let at = inner.iter().find(|x| x.as_rule() == Rule::at_clause).map(|c| self.clause_size(c));
                let at = at.unwrap_or_else(|| self.opt_size(None));
                if how.as_rule() == Rule::mmap_write {
                    Op::MmapWrite { fd, data: self.string(inner.first().cloned()), at }
                } else {
                    Op::MmapRead { fd, size: self.opt_size(inner.first()), at }
                }
            }
            _ => return None,
        };
        Some(op)
    }

    /// The operations on remembered inodes: `lstat`, `statfs`, `dirent`,
    /// `compare`, `value`, `listxattr`; `None` for the others.
    fn inode_op(&mut self, rule: Rule, parts: &[P<'_>]) -> Option<Op> {
        let op = match rule {
            Rule::o_lstat => {
                let (layer, path) = match parts.first() {
                    Some(p) if p.as_rule() == Rule::layer_path => {
                        let (l, path) = self.layer_path(p.clone());
                        (Some(l), path)
                    }
                    other => (None, self.op_path(other.cloned())),
                };
                Op::Lstat { path, name: self.opt_name(parts.get(1).cloned()), layer }
            }
            Rule::o_statfs => {
                Op::Statfs { path: self.op_path(parts.first().cloned()), name: self.opt_name(parts.get(1).cloned()) }
            }
            Rule::o_listxattr => Op::Listxattr { path: self.op_path(parts.first().cloned()) },
            Rule::o_dirent => {
                let dir = self.op_path(parts.first().cloned());
                let entry = match parts.get(1) {
                    Some(n) => {
                        let inner = n.clone().into_inner().next().unwrap_or(n.clone());
                        if inner.as_rule() == Rule::quoted_string {
                            self.literal(&inner)
                        } else {
                            Spanned::new(Bytes::from(inner.as_str()), self.span(&inner))
                        }
                    }
                    None => Spanned::new(Bytes::default(), Span::default()),
                };
                Op::Dirent { dir, entry, name: self.opt_name(parts.get(2).cloned()) }
            }
            Rule::o_compare => {
                let subject = match parts.first() {
                    Some(x) if x.as_rule() == Rule::other_name => {
                        let id = kids(x).next().unwrap_or(x.clone());
                        Subject::Name(Spanned::new(id.as_str().to_string(), self.span(&id)))
                    }
                    Some(x) if x.as_rule() == Rule::layer_path => {
                        let (layer, path) = self.layer_path(x.clone());
                        Subject::Layer { layer, path }
                    }
                    other => Subject::Path(self.op_path(other.cloned())),
                };
                let name = self.opt_name(parts.get(1).cloned());
                let fields = self.fields(parts.get(2));
                let how = match parts.get(3).map(|h| h.as_str()) {
                    Some("different") => CompareHow::Different,
                    Some("newer") => CompareHow::Newer,
                    Some("older") => CompareHow::Older,
                    _ => CompareHow::Same,
                };
                Op::Compare { subject, name, fields, how }
            }
            Rule::o_value => {
                let name = self.opt_name(parts.first().cloned());
                let field = match parts.get(1) {
                    Some(f) => {
                        let span = self.span(f);
                        let one = self.fields(Some(f));
                        Spanned::new(one.node.first().copied().unwrap_or(StatField::Ino), span)
                    }
                    None => Spanned::new(StatField::Ino, Span::default()),
                };
                let op = cmp_op(parts.get(2).map_or("==", |o| o.as_str()));
                let value = match parts.get(3) {
                    Some(w) => self.number(w, "number"),
                    None => Spanned::new(0, Span::default()),
                };
                Op::Value { name, field, op, value }
            }
            _ => return None,
        };
        Some(op)
    }

    /// Known words (fields, open flags), each once: an unknown word gets a
    /// "did you mean", a repeated one an error; `kind` and `what` name them.
    fn known_words<T: Copy + PartialEq>(
        &mut self,
        words: Vec<P<'_>>,
        parse: fn(&str) -> Option<T>,
        names: &[&str],
        (kind, what, label, listed): (ErrorKind, &str, &str, &str),
    ) -> Vec<T> {
        let mut out = Vec::new();
        for w in words {
            let wspan = self.span(&w);
            match parse(w.as_str()) {
                Some(f) if out.contains(&f) => {
                    self.help(
                        kind,
                        format!("{what} `{}` is given twice", w.as_str()),
                        wspan,
                        "again",
                        "give each once",
                    );
                }
                Some(f) => out.push(f),
                None => {
                    let help = match crate::diag::closest(w.as_str(), names.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("{listed} {}", names.join(", ")),
                    };
                    self.help(kind, format!("unknown {what} `{}`", w.as_str()), wspan, label, help);
                }
            }
        }
        out
    }

    /// `ino,dev,nlink`: each a known field, none twice.
    fn fields(&mut self, p: Option<&P<'_>>) -> Spanned<Vec<StatField>> {
        let Some(p) = p else { return Spanned::new(Vec::new(), Span::default()) };
        let span = self.span(p);
        let words: Vec<P<'_>> = if p.as_rule() == Rule::field_list { kids(p).collect() } else { vec![p.clone()] };
        let names: Vec<&str> = StatField::ALL.iter().map(|f| f.name()).collect();
        let out = self.known_words(
            words,
            StatField::parse,
            &names,
            (ErrorKind::BadField, "field", "not a field", "fields are"),
        );
        Spanned::new(out, span)
    }

    /// `rdonly`, `wronly|creat|excl`, ...: each known, none twice, one access mode.
    fn open_flags(&mut self, p: Option<&P<'_>>) -> Spanned<Vec<OpenFlag>> {
        let Some(p) = p else { return Spanned::new(Vec::new(), Span::default()) };
        let span = self.span(p);
        let names: Vec<&str> = OpenFlag::ALL.iter().map(|f| f.name()).collect();
        let listed = "flags, joined by `|`, are";
        let flags = self.known_words(
            kids(p).collect(),
            OpenFlag::parse,
            &names,
            (ErrorKind::BadOpenFlag, "open flag", "not a flag", listed),
        );
        let access = [OpenFlag::Rdonly, OpenFlag::Wronly, OpenFlag::Rdwr, OpenFlag::Path];
        let modes: Vec<&str> = flags.iter().filter(|f| access.contains(f)).map(|f| f.name()).collect();
        if modes.len() > 1 {
            self.help(
                ErrorKind::BadOpenFlag,
                format!("`{}` are access modes; a file is opened with one", modes.join("` and `")),
                span,
                "more than one access mode",
                "choose one of rdonly, wronly, rdwr (or path)",
            );
        } else if modes.is_empty() && !flags.is_empty() {
            self.help(
                ErrorKind::BadOpenFlag,
                "no access mode among the flags",
                span,
                "rdonly, wronly, rdwr or path is missing",
                "say how the file is opened: `rdonly`, `wronly`, `rdwr`, or `path` (O_PATH)",
            );
        }
        Spanned::new(flags, span)
    }

    fn opt_path(&mut self, p: Option<P<'_>>) -> PathRef {
        match p {
            Some(x) => self.path(x),
            None => Spanned::new("/".into(), Span::default()),
        }
    }

    fn opt_name(&mut self, p: Option<P<'_>>) -> Name {
        match p {
            Some(x) => self.name(&x),
            None => Spanned::new(String::new(), Span::default()),
        }
    }

    /// The target of a symbolic link a layer holds, which Linux must be able to create.
    fn symlink_target(&mut self, t: &Text) {
        let t_len = t.node.len();
        let problem = if t_len == 0 {
            Some(("symlink target is empty".to_string(), "Linux refuses empty symlink targets (ENOENT)".to_string()))
        } else if t.node.as_slice().contains(&0) {
            Some(("symlink target contains a NUL byte".into(), "Linux symlink targets cannot contain NUL".into()))
        } else if t_len > MAX_PATH_BYTES {
            Some((
                format!("symlink target is {t_len} bytes long"),
                format!("Linux symlink targets are at most {MAX_PATH_BYTES} bytes (PATH_MAX, with the final NUL)"),
            ))
        } else {
            None
        };
        if let Some((msg, help)) = problem {
            self.help(ErrorKind::BadPath, msg, t.span, "this target", help);
        }
    }

    /// An xattr name, which Linux takes up to [`MAX_XATTR_NAME_BYTES`].
    fn xattr_name(&mut self, p: Option<P<'_>>) -> Name {
        let name = self.opt_name(p);
        if name.node.len() > MAX_XATTR_NAME_BYTES {
            self.help(
                ErrorKind::BadXattr,
                format!("xattr name `{}` is {} bytes long", brief(&name.node), name.node.len()),
                name.span,
                "too long",
                format!(
                    "Linux xattr names are at most {MAX_XATTR_NAME_BYTES} bytes (XATTR_NAME_MAX), namespace included"
                ),
            );
        }
        name
    }

    /// An xattr value, which Linux takes up to [`MAX_XATTR_VALUE_BYTES`].
    fn xattr_value(&mut self, p: Option<P<'_>>) -> Text {
        let value = self.string(p);
        if value.node.len() > MAX_XATTR_VALUE_BYTES {
            self.help(
                ErrorKind::BadXattr,
                format!("xattr value is {} bytes long", value.node.len()),
                value.span,
                "too long",
                format!("Linux xattr values are at most {MAX_XATTR_VALUE_BYTES} bytes (XATTR_SIZE_MAX)"),
            );
        }
        value
    }

    // -------------------------------------------------------------- expectations

    fn expect(&mut self, p: P<'_>) -> Stmt {
        if p.clone().into_inner().any(|c| c.as_rule() == Rule::kw_mountinfo) {
            let mut e = MountinfoExpect { mount: None, checks: Block::default() };
            for c in kids(&p) {
                match c.as_rule() {
                    Rule::ident => e.mount = Some(self.name(&c)),
                    _ => {
                        e.checks = self.block(&c, true, |b: &mut Self, m| {
                            let negated = m.clone().into_inner().any(|x| x.as_rule() == Rule::kw_not);
                            MountinfoCheck { negated, text: b.string(kids(&m).next()) }
                        })
                    }
                }
            }
            return Stmt::ExpectMountinfo(e);
        }
        let mut k = kids(&p);
        match k.next() {
            Some(b) if b.as_rule() == Rule::tar_block => Stmt::ExpectLayer(self.block(&b, true, Builder::tar_entry)),
            Some(t) => {
                let target = match t.as_str() {
                    "upper" => TreeTarget::Upper,
                    "work" => TreeTarget::Work,
                    _ => TreeTarget::Merged,
                };
                let mut exactly = false;
                let mut raw = false;
                let mut name = None;
                let mut checks = Block::default();
                let mut open = false;
                for c in k {
                    match c.as_rule() {
                        Rule::exactly_flag => exactly = true,
                        Rule::open_block => open = true,
                        Rule::raw_flag => {
                            raw = true;
                            if target != TreeTarget::Upper {
                                let span = self.span(&c);
                                self.help(
                                    ErrorKind::Conflict,
                                    format!("`raw` goes with `expect upper`, not `expect {}`", target.name()),
                                    span,
                                    "here",
                                    "a work directory is always shown raw; a merged view has nothing to decode",
                                );
                            }
                        }
                        Rule::tree_name => name = self.tree_name(c, target),
                        _ => checks = self.block(&c, true, Builder::check),
                    }
                }
                Stmt::Expect(Expect { target, name, raw, exactly, open, checks })
            }
            None => Stmt::ExpectLayer(Block::default()),
        }
    }

    /// `upper NAME`, `work NAME`, `merged on MOUNT`: `on` goes with `merged` only.
    fn tree_name(&mut self, p: P<'_>, target: TreeTarget) -> Option<Name> {
        let on = p.clone().into_inner().any(|c| c.as_rule() == Rule::kw_on);
        let n = kids(&p).next().map(|n| self.name(&n))?;
        let (want, example) = match target {
            TreeTarget::Merged => (true, "`expect merged on MOUNT { ... }`"),
            TreeTarget::Upper => (false, "`expect upper NAME { ... }`"),
            TreeTarget::Work => (false, "`expect work NAME { ... }`"),
        };
        if on != want {
            let span = self.span(&p);
            self.help(
                ErrorKind::Syntax,
                format!("`expect {}` names its tree this way: {example}", target.name()),
                span,
                "here",
                "an upper or a work directory by its name; a merged view by its mount (`on MOUNT`)",
            );
        }
        Some(n)
    }

    fn check(&mut self, p: P<'_>) -> Check {
        let rule = p.as_rule();
        let mut k = kids(&p);
        let path = self.opt_path(k.next());
        let rest: Vec<P<'_>> = k.collect();
        let mut it = rest.into_iter();
        match rule {
            Rule::c_file => {
                let mut content = None;
                let mut size = None;
                for c in it {
                    match c.as_rule() {
                        Rule::string => content = Some(self.string(Some(c))),
                        _ => size = kids(&c).next().map(|w| self.size(&w)),
                    }
                }
                Check::File { path, content, size }
            }
            Rule::c_dir => {
                let opaque = it.next().map(|f| f.as_rule() == Rule::opaque_flag);
                Check::Dir { path, opaque }
            }
            Rule::c_symlink => Check::Symlink { path, target: it.next().map(|s| self.string(Some(s))) },
            Rule::c_fifo => Check::Fifo { path },
            Rule::c_device => {
                let kind = dev_kind(it.next().map(|d| d.as_str()).unwrap_or("char"));
                let dev = match it.next() {
                    Some(d) => self.devnum(&d),
                    None => Spanned::new(DevNum { major: 0, minor: 0 }, Span::default()),
                };
                Check::Device { path, kind, dev }
            }
            Rule::c_whiteout => Check::Whiteout { path },
            Rule::c_absent => Check::Absent { path },
            Rule::c_xattr => {
                let name = self.xattr_name(it.next());
                let value = it.next().map(|s| self.xattr_value(Some(s)));
                Check::Xattr { path, name, value }
            }
            Rule::c_no_xattr => Check::NoXattr { path, name: self.xattr_name(it.next()) },
            Rule::c_metacopy => Check::Metacopy { path, digest: it.next().map(|s| self.string(Some(s))) },
            Rule::c_redirect => Check::Redirect { path, target: self.string(it.next()) },
            Rule::c_mode => {
                let mode = match it.next() {
                    Some(w) => self.mode(&w),
                    None => Spanned::new(Mode(0), Span::default()),
                };
                Check::Mode { path, mode }
            }
            Rule::c_owner => {
                let owner = match it.next() {
                    Some(w) => self.owner(&w),
                    None => Spanned::new(Owner { uid: 0, gid: 0 }, Span::default()),
                };
                Check::Owner { path, owner }
            }
            Rule::c_nlink => {
                let count = match it.next() {
                    Some(w) => self.number(&w, "link count"),
                    None => Spanned::new(0, Span::default()),
                };
                Check::Nlink { path, count }
            }
            Rule::c_attrs => Check::Attrs { path, flags: self.attr_changes(it.collect()) },
            Rule::c_acl => {
                let (default, acl) = self.acl(it.collect());
                Check::Acl { path, default, acl }
            }
            Rule::c_blocks => {
                let op = cmp_op(it.next().map_or("==", |o| o.as_str()));
                let count = match it.next() {
                    Some(w) => self.number(&w, "number of blocks"),
                    None => Spanned::new(0, Span::default()),
                };
                Check::Blocks { path, op, count }
            }
            Rule::c_xattrs => {
                let names = match it.next() {
                    Some(l) => kids(&l)
                        .map(|n| {
                            let inner = n.clone().into_inner().next().unwrap_or(n.clone());
                            let text = if inner.as_rule() == Rule::quoted_string {
                                String::from_utf8_lossy(self.literal(&inner).node.as_slice()).into_owned()
                            } else {
                                inner.as_str().to_string()
                            };
                            Spanned::new(text, self.span(&inner))
                        })
                        .collect(),
                    None => Vec::new(),
                };
                Check::Xattrs { path, names }
            }
            Rule::c_entries => {
                let count = match it.next() {
                    Some(w) => self.number(&w, "number of entries"),
                    None => Spanned::new(0, Span::default()),
                };
                Check::Entries { path, count }
            }
            other => unreachable_rule(other),
        }
    }

    fn tar_entry(&mut self, p: P<'_>) -> TarEntry {
        let rule = p.as_rule();
        let mut k = kids(&p);
        let path = self.opt_path(k.next());
        match rule {
            Rule::t_dir => TarEntry::Dir { path },
            Rule::t_file => TarEntry::File { path, content: k.next().map(|s| self.string(Some(s))) },
            Rule::t_symlink => TarEntry::Symlink { path, target: self.string(k.next()) },
            Rule::t_hardlink => TarEntry::Hardlink { path, target: self.opt_path(k.next()) },
            Rule::t_whiteout => TarEntry::Whiteout { path },
            Rule::t_opaque => TarEntry::Opaque { path },
            other => unreachable_rule(other),
        }
    }
}

fn dev_kind(s: &str) -> DevKind {
    if s == "block" {
        DevKind::Block
    } else {
        DevKind::Char
    }
}

fn cmp_op(s: &str) -> CmpOp {
    match s {
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        "!=" => CmpOp::Ne,
        ">=" => CmpOp::Ge,
        ">" => CmpOp::Gt,
        _ => CmpOp::Eq,
    }
}

/// The grammar and the builder are written together; a rule reaching the
/// wrong builder is a bug in this file, never a property of the input.
#[allow(clippy::panic)]
fn unreachable_rule(rule: Rule) -> ! {
    panic!("internal error: the builder met grammar rule {rule:?} where it cannot occur")
}

/// The longest name of a directory entry (Linux's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;
/// The longest path: Linux's `PATH_MAX` is 4096 bytes with the terminating NUL.
pub const MAX_PATH_BYTES: usize = 4095;
/// The most components in a path. ovlc captures trees (`runner/src/tree.rs`)
/// at most 256 directories deep and refuses deeper ones (ELOOP); with
/// at most 256 components, every entry a scenario names can be captured.
pub const MAX_PATH_COMPONENTS: usize = 256;
/// The longest xattr name (Linux's `XATTR_NAME_MAX`), namespace included.
pub const MAX_XATTR_NAME_BYTES: usize = 255;
/// The longest xattr value (Linux's `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE_BYTES: usize = 65536;

/// What is wrong with a path, if anything, and how to fix it.
/// Could a raw option string (`options "..."`, given to mount(2) from the
/// instance's layers directory) name a directory outside it: a `/`, a `.`
/// or `..` item, a NUL, a `\` (escapes that the kernel or fuse-overlayfs
/// would turn into any of these)?
pub fn raw_options_escape(text: &str) -> bool {
    text.contains(['/', '\\', '\0']) || text.split([',', ':', '=', '+']).any(|p| p == ".." || p == ".")
}

/// Options that name directories (overlay's and fuse-overlayfs' own), which
/// ovlc gives and a scenario may not.
const DIRECTORY_OPTIONS: [&str; 6] = ["lowerdir", "lowerdir+", "upperdir", "workdir", "datadir+", "plugins"];

/// Why an option given by a scenario (`with`, `vary`, `param`,
/// `reconfigure`) could reach a directory of the host, if it could.
pub fn option_escape(name: &str, value: Option<&str>) -> Option<&'static str> {
    if DIRECTORY_OPTIONS.contains(&name) {
        return Some("names a directory");
    }
    if value.is_some_and(|v| v.contains(['/', '\\', '\0'])) {
        return Some("has a value with `/` or `\\`");
    }
    None
}

pub fn path_problem(p: &str) -> Option<(String, String)> {
    let shown = brief(p);
    if p.is_empty() {
        return Some(("empty path".into(), "paths are absolute, like /etc/motd".into()));
    }
    if p.contains('\0') {
        return Some(("path contains a NUL byte".into(), "Linux paths cannot contain NUL".into()));
    }
    if !p.starts_with('/') {
        return Some((
            format!("path `{shown}` is relative"),
            format!("paths are absolute inside the overlay: write `/{shown}`"),
        ));
    }
    if p == "/" {
        return None;
    }
    if p.ends_with('/') {
        return Some((format!("path `{shown}` ends with `/`"), format!("write `{}`", brief(p.trim_end_matches('/')))));
    }
    if p.contains("//") {
        return Some((
            format!("path `{shown}` has an empty component"),
            "separate components with a single `/`".into(),
        ));
    }
    let mut components = 0;
    let mut longest = "";
    for c in p.split('/').skip(1) {
        if c == "." || c == ".." {
            return Some((
                format!("path `{shown}` has a `{c}` component"),
                "paths are normalised: no `.` or `..` components".into(),
            ));
        }
        components += 1;
        if c.len() > longest.len() {
            longest = c;
        }
    }
    if p.len() > MAX_PATH_BYTES {
        return Some((
            format!("path `{shown}` is {} bytes long", p.len()),
            format!("Linux paths are at most {MAX_PATH_BYTES} bytes (PATH_MAX, 4096 with the terminating NUL)"),
        ));
    }
    if longest.len() > MAX_NAME_BYTES {
        return Some((
            format!("path `{shown}` has a name of {} bytes", longest.len()),
            format!("Linux names are at most {MAX_NAME_BYTES} bytes (NAME_MAX)"),
        ));
    }
    if components > MAX_PATH_COMPONENTS {
        return Some((
            format!("path `{shown}` is {components} components deep"),
            format!(
                "ovlc captures trees at most {MAX_PATH_COMPONENTS} directories deep: \
                 a path has at most {MAX_PATH_COMPONENTS} components"
            ),
        ));
    }
    None
}
