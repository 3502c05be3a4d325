//! Language errors: what went wrong, where, and how to fix it; rendered with miette.

use std::fmt;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, SourceCode, SourceSpan, SpanContents,
};
use serde::Serialize;

/// Every kind of language error, one code each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    Syntax,
    UnknownStatement,
    UnterminatedString,
    BadEscape,
    NotUtf8,
    TooLarge,
    TooDeep,
    BadPath,
    UnknownLayer,
    DuplicateLayer,
    DuplicatePath,
    PathConflict,
    HardlinkTarget,
    UnknownErrno,
    BadMode,
    BadOwner,
    BadSize,
    BadDevice,
    BadVersion,
    BadNumber,
    UnknownDriver,
    UnknownBacking,
    SameInodeBeforeStat,
    VaryConflict,
    HeaderOrder,
    DuplicateHeader,
    MissingScenario,
    BeforeMount,
    NotMounted,
    ExpectLayerReadonly,
    UpperExists,
    ResultKind,
    UpperOnlyCheck,
    Conflict,
    BadTarPath,
    TooManyInstances,
    BadXattr,
    TooManyErrors,
    BadOpenFlag,
    NeedsDescriptor,
    DescriptorNotOpen,
    DescriptorOpen,
    UnknownName,
    BadField,
    UnknownMount,
    UnknownDir,
    NameClash,
    ReadOnlyFilesystem,
}

impl ErrorKind {
    /// Every kind, for tests that must cover them all.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::Syntax,
        ErrorKind::UnknownStatement,
        ErrorKind::UnterminatedString,
        ErrorKind::BadEscape,
        ErrorKind::NotUtf8,
        ErrorKind::TooLarge,
        ErrorKind::TooDeep,
        ErrorKind::BadPath,
        ErrorKind::UnknownLayer,
        ErrorKind::DuplicateLayer,
        ErrorKind::DuplicatePath,
        ErrorKind::PathConflict,
        ErrorKind::HardlinkTarget,
        ErrorKind::UnknownErrno,
        ErrorKind::BadMode,
        ErrorKind::BadOwner,
        ErrorKind::BadSize,
        ErrorKind::BadDevice,
        ErrorKind::BadVersion,
        ErrorKind::BadNumber,
        ErrorKind::UnknownDriver,
        ErrorKind::UnknownBacking,
        ErrorKind::SameInodeBeforeStat,
        ErrorKind::VaryConflict,
        ErrorKind::HeaderOrder,
        ErrorKind::DuplicateHeader,
        ErrorKind::MissingScenario,
        ErrorKind::BeforeMount,
        ErrorKind::NotMounted,
        ErrorKind::ExpectLayerReadonly,
        ErrorKind::UpperExists,
        ErrorKind::ResultKind,
        ErrorKind::UpperOnlyCheck,
        ErrorKind::Conflict,
        ErrorKind::BadTarPath,
        ErrorKind::TooManyInstances,
        ErrorKind::BadXattr,
        ErrorKind::TooManyErrors,
        ErrorKind::BadOpenFlag,
        ErrorKind::NeedsDescriptor,
        ErrorKind::DescriptorNotOpen,
        ErrorKind::DescriptorOpen,
        ErrorKind::UnknownName,
        ErrorKind::BadField,
        ErrorKind::UnknownMount,
        ErrorKind::UnknownDir,
        ErrorKind::NameClash,
        ErrorKind::ReadOnlyFilesystem,
    ];

    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Syntax => "ovl::syntax",
            ErrorKind::UnknownStatement => "ovl::unknown-statement",
            ErrorKind::UnterminatedString => "ovl::unterminated-string",
            ErrorKind::BadEscape => "ovl::bad-escape",
            ErrorKind::NotUtf8 => "ovl::not-utf8",
            ErrorKind::TooLarge => "ovl::too-large",
            ErrorKind::TooDeep => "ovl::too-deep",
            ErrorKind::BadPath => "ovl::bad-path",
            ErrorKind::UnknownLayer => "ovl::unknown-layer",
            ErrorKind::DuplicateLayer => "ovl::duplicate-layer",
            ErrorKind::DuplicatePath => "ovl::duplicate-path",
            ErrorKind::PathConflict => "ovl::path-conflict",
            ErrorKind::HardlinkTarget => "ovl::hardlink-target",
            ErrorKind::UnknownErrno => "ovl::unknown-errno",
            ErrorKind::BadMode => "ovl::bad-mode",
            ErrorKind::BadOwner => "ovl::bad-owner",
            ErrorKind::BadSize => "ovl::bad-size",
            ErrorKind::BadDevice => "ovl::bad-device",
            ErrorKind::BadVersion => "ovl::bad-version",
            ErrorKind::BadNumber => "ovl::bad-number",
            ErrorKind::UnknownDriver => "ovl::unknown-driver",
            ErrorKind::UnknownBacking => "ovl::unknown-backing",
            ErrorKind::SameInodeBeforeStat => "ovl::same-inode-before-stat",
            ErrorKind::VaryConflict => "ovl::vary-conflict",
            ErrorKind::HeaderOrder => "ovl::header-order",
            ErrorKind::DuplicateHeader => "ovl::duplicate-header",
            ErrorKind::MissingScenario => "ovl::missing-scenario",
            ErrorKind::BeforeMount => "ovl::before-mount",
            ErrorKind::NotMounted => "ovl::not-mounted",
            ErrorKind::ExpectLayerReadonly => "ovl::expect-layer-readonly",
            ErrorKind::UpperExists => "ovl::upper-exists",
            ErrorKind::ResultKind => "ovl::result-kind",
            ErrorKind::UpperOnlyCheck => "ovl::upper-only-check",
            ErrorKind::Conflict => "ovl::conflict",
            ErrorKind::BadTarPath => "ovl::bad-tar-path",
            ErrorKind::TooManyInstances => "ovl::too-many-instances",
            ErrorKind::BadXattr => "ovl::bad-xattr",
            ErrorKind::TooManyErrors => "ovl::too-many-errors",
            ErrorKind::BadOpenFlag => "ovl::bad-open-flag",
            ErrorKind::NeedsDescriptor => "ovl::needs-descriptor",
            ErrorKind::DescriptorNotOpen => "ovl::fd-not-open",
            ErrorKind::DescriptorOpen => "ovl::fd-already-open",
            ErrorKind::UnknownName => "ovl::unknown-name",
            ErrorKind::BadField => "ovl::bad-field",
            ErrorKind::UnknownMount => "ovl::unknown-mount",
            ErrorKind::UnknownDir => "ovl::unknown-dir",
            ErrorKind::NameClash => "ovl::name-clash",
            ErrorKind::ReadOnlyFilesystem => "ovl::read-only-fs",
        }
    }
}

/// A secondary place that explains the error ("first defined here").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Related {
    pub start: usize,
    pub end: usize,
    pub label: String,
}

/// One language error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diag {
    pub kind: ErrorKind,
    pub message: String,
    /// Byte range in the source; `None` for errors about the whole file.
    pub span: Option<(usize, usize)>,
    pub label: String,
    pub help: Option<String>,
    pub related: Vec<Related>,
}

impl Diag {
    pub fn new(kind: ErrorKind, message: impl Into<String>, span: (usize, usize), label: impl Into<String>) -> Self {
        Self {
            kind,
            message: tidy(message.into()),
            span: Some(span),
            label: tidy(label.into()),
            help: None,
            related: Vec::new(),
        }
    }

    /// An error about the whole file, without a place in it. The language's
    /// own errors all have one; this is for callers that have no text.
    pub fn whole_file(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: tidy(message.into()), span: None, label: String::new(), help: None, related: Vec::new() }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(tidy(help.into()));
        self
    }

    pub fn with_related(mut self, span: (usize, usize), label: impl Into<String>) -> Self {
        self.related.push(Related { start: span.0, end: span.1, label: tidy(label.into()) });
        self
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.kind.code()))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (start, end) = self.span?;
        let primary = LabeledSpan::new_primary_with_span(Some(self.label.clone()), (start, end.saturating_sub(start)));
        let others = self
            .related
            .iter()
            .map(|r| LabeledSpan::new_with_span(Some(r.label.clone()), (r.start, r.end.saturating_sub(r.start))));
        Some(Box::new(std::iter::once(primary).chain(others)))
    }
}

/// Longest message, label or help kept whole, in characters. A longer one
/// quotes some huge token of the file; it is cut in the middle.
const MAX_TEXT: usize = 300;

/// A message, label or help as it may be shown: control characters written
/// as escapes (a file cannot drive the terminal through its errors), and at
/// most [`MAX_TEXT`] characters.
fn tidy(s: String) -> String {
    let clean = if s.chars().any(char::is_control) {
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\0' => out.push_str("\\0"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        out
    } else {
        s
    };
    if clean.len() <= MAX_TEXT {
        return clean;
    }
    let n = clean.chars().count();
    if n <= MAX_TEXT {
        return clean;
    }
    let head: String = clean.chars().take(MAX_TEXT * 2 / 3).collect();
    let tail: String = clean.chars().skip(n - MAX_TEXT / 4).collect();
    format!("{head}…{tail}")
}

/// `span` made valid for `text`: inside it, `start <= end`, on character boundaries.
pub(crate) fn clamp_span(text: &str, (start, end): (usize, usize)) -> (usize, usize) {
    let mut s = start.min(text.len());
    while !text.is_char_boundary(s) {
        s -= 1;
    }
    let mut e = end.clamp(s, text.len());
    while !text.is_char_boundary(e) {
        e += 1;
    }
    (s, e)
}

/// Bytes between two marks of [`LineIndex`]: a column is found by counting
/// at most this many bytes, however long its line.
const MARK: usize = 256;

/// Maps byte offsets to 1-based lines and columns (columns count characters).
/// Lines end as the grammar's do: at `\n`, `\r\n` or a lone `\r`. Building
/// it costs one pass over the text; a lookup costs a binary search and at
/// most [`MARK`] bytes of counting, so locating every token of a file stays
/// linear even on a line of a million characters.
#[derive(Debug, Clone)]
pub struct LineIndex {
    /// The byte offset where each line starts.
    starts: Vec<usize>,
    /// The number of characters before each multiple of [`MARK`] bytes.
    marks: Vec<usize>,
}

fn char_count(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c & 0xc0 != 0x80).count()
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let b = text.as_bytes();
        let mut starts = vec![0];
        for (i, &c) in b.iter().enumerate() {
            if c == b'\n' || (c == b'\r' && b.get(i + 1) != Some(&b'\n')) {
                starts.push(i + 1);
            }
        }
        let mut marks = Vec::with_capacity(b.len() / MARK + 2);
        let mut chars = 0;
        for chunk in b.chunks(MARK) {
            marks.push(chars);
            chars += char_count(chunk);
        }
        marks.push(chars);
        Self { starts, marks }
    }

    /// The number of lines (a text ending with a line break has an empty last line).
    pub fn lines(&self) -> usize {
        self.starts.len()
    }

    /// The 0-based line holding `offset` (a line break belongs to the line it ends).
    pub fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset).saturating_sub(1)
    }

    /// Line `i`'s byte range without its line break, and where the next line starts.
    fn line_range(&self, text: &str, i: usize) -> (usize, usize, usize) {
        let b = text.as_bytes();
        let start = self.starts[i].min(b.len());
        let next = self.starts.get(i + 1).copied().unwrap_or(b.len()).min(b.len()).max(start);
        let mut end = next;
        if end > start && b[end - 1] == b'\n' {
            end -= 1;
        }
        if end > start && b[end - 1] == b'\r' {
            end -= 1;
        }
        (start, end, next)
    }

    /// Characters in `text[..offset]`.
    fn chars_before(&self, text: &str, offset: usize) -> usize {
        let offset = offset.min(text.len());
        let k = offset / MARK;
        self.marks.get(k).copied().unwrap_or(0) + char_count(&text.as_bytes()[k * MARK..offset])
    }

    pub fn line_col(&self, text: &str, offset: usize) -> (u32, u32) {
        let offset = offset.min(text.len());
        let line = self.line_of(offset);
        let start = self.starts[line].min(offset);
        let col = if offset - start <= MARK {
            char_count(&text.as_bytes()[start..offset])
        } else {
            self.chars_before(text, offset) - self.chars_before(text, start)
        };
        (line as u32 + 1, col as u32 + 1)
    }
}

/// One error with its place in lines and columns (`None` for errors about
/// the whole file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Located {
    pub file: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub end_line: Option<u32>,
    pub end_column: Option<u32>,
    pub code: &'static str,
    pub message: String,
    pub label: String,
    pub help: Option<String>,
}

/// A file's errors with the text they point into.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The file as the user named it.
    pub name: String,
    /// The text (lossily decoded when it was not UTF-8).
    pub text: String,
    pub diags: Vec<Diag>,
}

impl Failure {
    /// The errors as miette draws them: `file:line:col`, snippet, label, help.
    /// Without colour and at a fixed width, the output is stable enough to snapshot.
    ///
    /// miette is given, for each error, only the lines it shows, each line
    /// longer than [`LONG_LINE`] bytes cut down to the text around the
    /// labels: its cost does not grow with the file, and no column is too
    /// wide for it to draw. The `file:line:col` it prints is the real one.
    pub fn render(&self, color: bool, width: usize) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(width).with_links(false);
        let idx = LineIndex::new(&self.text);
        let name = tidy(self.name.clone());
        let mut out = String::new();
        for d in &self.diags {
            let shown = Shown::new(&name, &self.text, &idx, d);
            let mut one = String::new();
            if handler.render_report(&mut one, &shown).is_err() {
                one = format!("{name}: {}\n", shown.message);
            }
            if shown.source.is_none() {
                // miette shows no location without a span; name the file in the text.
                one = one.replacen(&shown.message, &format!("{name}: {}", shown.message), 1);
            }
            out.push_str(&one);
            out.push('\n');
        }
        out
    }

    /// Each error with its place as line and column numbers (1-based;
    /// columns count characters; the end is exclusive), for machine
    /// readers (`ovlc check --message-format json`).
    pub fn located(&self) -> Vec<Located> {
        let idx = LineIndex::new(&self.text);
        self.diags
            .iter()
            .map(|d| {
                let (start, end) = match d.span {
                    Some(span) => {
                        let (s, e) = clamp_span(&self.text, span);
                        (Some(idx.line_col(&self.text, s)), Some(idx.line_col(&self.text, e)))
                    }
                    None => (None, None),
                };
                Located {
                    file: tidy(self.name.clone()),
                    line: start.map(|p| p.0),
                    column: start.map(|p| p.1),
                    end_line: end.map(|p| p.0),
                    end_column: end.map(|p| p.1),
                    code: d.kind.code(),
                    message: tidy(d.message.clone()),
                    label: d.label.clone(),
                    help: d.help.clone(),
                }
            })
            .collect()
    }

    /// One line per error: `file:line:col: code: message`.
    pub fn short(&self) -> String {
        let idx = LineIndex::new(&self.text);
        let name = tidy(self.name.clone());
        let mut out = String::new();
        for d in &self.diags {
            let message = tidy(d.message.clone());
            match d.span {
                Some(span) => {
                    let (s, _) = clamp_span(&self.text, span);
                    let (l, c) = idx.line_col(&self.text, s);
                    out.push_str(&format!("{name}:{l}:{c}: {}: {message}\n", d.kind.code()));
                }
                None => out.push_str(&format!("{name}: {}: {message}\n", d.kind.code())),
            }
        }
        out
    }
}

// ------------------------------------------------------------------ rendering

/// Lines up to this many bytes are shown whole; longer ones are cut down.
const LONG_LINE: usize = 400;
/// Characters kept on each side of a label's ends in a line that is cut.
const AROUND: usize = 40;
/// What stands for the text cut out of a line.
const CUT: &str = "…";

/// A run of a line's text kept in an [`Excerpt`].
#[derive(Debug)]
struct Piece {
    /// Its offset in the file.
    real: usize,
    /// Its offset in the excerpt.
    at: usize,
    len: usize,
}

/// A line of the file kept in an [`Excerpt`].
#[derive(Debug)]
struct ExLine {
    /// 0-based line number in the file.
    line: usize,
    /// Where it starts and ends (before its line break) in the excerpt.
    start: usize,
    end: usize,
    /// Where it ends (before its line break) in the file.
    real_end: usize,
    /// The line break as written: a `\n` follows the line in the excerpt.
    broken: bool,
    /// Where the next line starts in the excerpt.
    next: usize,
    pieces: Vec<Piece>,
}

/// The lines one error shows (those of its labels, one line around each),
/// long lines cut down, as miette reads them; line numbers and columns are
/// the file's.
#[derive(Debug)]
struct Excerpt<'a> {
    name: &'a str,
    real: &'a str,
    idx: &'a LineIndex,
    text: String,
    lines: Vec<ExLine>,
}

/// The offset `n` characters before `at` in `s`, not before `floor`.
fn back(s: &str, at: usize, n: usize, floor: usize) -> usize {
    s[floor..at].char_indices().rev().nth(n.saturating_sub(1)).map_or(floor, |(i, _)| floor + i)
}

/// The offset `n` characters after `at` in `s`, not after `ceil`.
fn forth(s: &str, at: usize, n: usize, ceil: usize) -> usize {
    s[at..ceil].char_indices().nth(n).map_or(ceil, |(i, _)| at + i)
}

/// Shown text of the file: control characters (but tabs) as `?`, byte for
/// byte, so that offsets still match.
fn push_shown(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_control() && c != '\t' {
            for _ in 0..c.len_utf8() {
                out.push('?');
            }
        } else {
            out.push(c);
        }
    }
}

impl<'a> Excerpt<'a> {
    /// The excerpt for labels at `spans` (valid for `real`, see [`clamp_span`]).
    fn new(name: &'a str, real: &'a str, idx: &'a LineIndex, spans: &[(usize, usize)]) -> Self {
        let last = idx.lines() - 1;
        let end_line = |(s, e): (usize, usize)| idx.line_of(e.saturating_sub(1).max(s));
        // Lines to show, as ranges, and the label ends on each line.
        let mut ranges: Vec<(usize, usize)> =
            spans.iter().map(|&sp| (idx.line_of(sp.0).saturating_sub(1), (end_line(sp) + 1).min(last))).collect();
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(m) if r.0 <= m.1 + 1 => m.1 = m.1.max(r.1),
                _ => merged.push(r),
            }
        }
        let mut points: Vec<(usize, usize)> = Vec::new();
        for &sp in spans {
            points.push((idx.line_of(sp.0), sp.0));
            points.push((end_line(sp), sp.1));
        }
        points.sort_unstable();
        let mut x = Excerpt { name, real, idx, text: String::new(), lines: Vec::new() };
        for (first, last) in merged {
            for line in first..=last {
                let (start, end, next) = idx.line_range(real, line);
                let lo = points.partition_point(|p| p.0 < line);
                let hi = points.partition_point(|p| p.0 <= line);
                let mut keep: Vec<(usize, usize)> = Vec::new();
                if end - start <= LONG_LINE {
                    keep.push((start, end));
                } else if lo == hi {
                    keep.push((start, forth(real, start, 2 * AROUND, end)));
                } else {
                    for &(_, p) in &points[lo..hi] {
                        let p = p.clamp(start, end);
                        let r = (back(real, p, AROUND, start), forth(real, p, AROUND, end));
                        match keep.last_mut() {
                            // Join windows a few characters apart rather than cut between them.
                            Some(k) if r.0 <= k.1 + 8 => k.1 = k.1.max(r.1),
                            _ => keep.push(r),
                        }
                    }
                }
                let ex_start = x.text.len();
                let mut pieces = Vec::with_capacity(keep.len());
                let mut at = start;
                for (a, b) in keep {
                    if a > at {
                        x.text.push_str(CUT);
                    }
                    pieces.push(Piece { real: a, at: x.text.len(), len: b - a });
                    push_shown(&mut x.text, &real[a..b]);
                    at = b;
                }
                if at < end {
                    x.text.push_str(CUT);
                }
                let ex_end = x.text.len();
                let broken = next > end;
                if broken {
                    x.text.push('\n');
                } else if points[lo..hi].iter().any(|&(_, p)| p >= end) {
                    // The file's last line, with a label at its very end: miette
                    // draws a label only under a character of the line, so give it one.
                    x.text.push(' ');
                }
                let next = x.text.len();
                x.lines.push(ExLine { line, start: ex_start, end: ex_end, real_end: end, broken, next, pieces });
            }
        }
        x
    }

    /// Where a file offset (a label's end, on line `line`) is in the excerpt.
    fn to_excerpt(&self, line: usize, offset: usize) -> usize {
        let i = self.lines.partition_point(|l| l.line < line);
        let Some(l) = self.lines.get(i).filter(|l| l.line == line) else { return self.text.len() };
        if offset > l.real_end {
            return l.end + usize::from(l.broken);
        }
        for p in &l.pieces {
            if offset < p.real {
                return p.at;
            }
            if offset <= p.real + p.len {
                return p.at + (offset - p.real);
            }
        }
        l.end
    }

    /// The excerpt line holding excerpt offset `at`.
    fn line_at(&self, at: usize) -> usize {
        self.lines.partition_point(|l| l.start <= at).saturating_sub(1)
    }

    /// Where an excerpt offset is in the file.
    fn to_file(&self, at: usize) -> usize {
        let Some(l) = self.lines.get(self.line_at(at)) else { return 0 };
        if at >= l.end {
            return l.real_end + usize::from(at > l.end);
        }
        let mut last = l.pieces.first().map_or(l.real_end, |p| p.real);
        for p in &l.pieces {
            if at < p.at {
                return p.real;
            }
            if at <= p.at + p.len {
                return p.real + (at - p.at);
            }
            last = p.real + p.len;
        }
        last
    }
}

/// What miette reads: a part of an [`Excerpt`], placed in the file.
struct Contents<'a> {
    data: &'a [u8],
    span: SourceSpan,
    name: &'a str,
    line: usize,
    column: usize,
    line_count: usize,
}

impl<'a> SpanContents<'a> for Contents<'a> {
    fn data(&self) -> &'a [u8] {
        self.data
    }
    fn span(&self) -> &SourceSpan {
        &self.span
    }
    fn name(&self) -> Option<&str> {
        Some(self.name)
    }
    fn line(&self) -> usize {
        self.line
    }
    fn column(&self) -> usize {
        self.column
    }
    fn line_count(&self) -> usize {
        self.line_count
    }
}

impl SourceCode for Excerpt<'_> {
    fn read_span<'b>(
        &'b self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'b> + 'b>, MietteError> {
        let s = span.offset();
        let e = s + span.len();
        if e > self.text.len() || self.lines.is_empty() {
            return Err(MietteError::OutOfBounds);
        }
        let (first, last) = (self.line_at(s), self.line_at(e.saturating_sub(1).max(s)));
        // Context lines, as long as they are the file's next lines.
        let mut a = first;
        while a > 0 && first - a < before && self.lines[a - 1].line + 1 == self.lines[a].line {
            a -= 1;
        }
        let mut b = last;
        while b + 1 < self.lines.len() && b - last < after && self.lines[b + 1].line == self.lines[b].line + 1 {
            b += 1;
        }
        let (start, line, column) = if before == 0 {
            let (l, c) = self.idx.line_col(self.real, self.to_file(s));
            (s, l as usize - 1, c as usize - 1)
        } else {
            (self.lines[a].start, self.lines[a].line, 0)
        };
        let end = if after == 0 { e.max(s) } else { self.lines[b].next };
        let end = end.clamp(start, self.text.len());
        Ok(Box::new(Contents {
            data: &self.text.as_bytes()[start..end],
            span: SourceSpan::from((start, end - start)),
            name: self.name,
            line,
            column,
            line_count: self.lines[b].line - line + 1,
        }))
    }
}

/// One error as miette draws it, reading an [`Excerpt`] of the file.
#[derive(Debug)]
struct Shown<'a> {
    diag: &'a Diag,
    message: String,
    help: Option<String>,
    labels: Vec<LabeledSpan>,
    source: Option<Excerpt<'a>>,
}

impl<'a> Shown<'a> {
    fn new(name: &'a str, text: &'a str, idx: &'a LineIndex, d: &'a Diag) -> Self {
        let message = tidy(d.message.clone());
        let help = d.help.clone().map(tidy);
        let Some(primary) = d.span else {
            return Shown { diag: d, message, help, labels: Vec::new(), source: None };
        };
        let mut spans = vec![(clamp_span(text, primary), tidy(d.label.clone()))];
        spans.extend(d.related.iter().map(|r| (clamp_span(text, (r.start, r.end)), tidy(r.label.clone()))));
        let bare: Vec<(usize, usize)> = spans.iter().map(|(s, _)| *s).collect();
        let x = Excerpt::new(name, text, idx, &bare);
        let labels = spans
            .into_iter()
            .enumerate()
            .map(|(i, ((s, e), label))| {
                let xs = x.to_excerpt(idx.line_of(s), s);
                let xe = x.to_excerpt(idx.line_of(e.saturating_sub(1).max(s)), e).max(xs);
                let at = (xs, xe - xs);
                if i == 0 {
                    LabeledSpan::new_primary_with_span(Some(label), at)
                } else {
                    LabeledSpan::new_with_span(Some(label), at)
                }
            })
            .collect();
        Shown { diag: d, message, help, labels, source: Some(x) }
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Shown<'_> {}

impl Diagnostic for Shown<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.kind.code()))
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        Some(Box::new(self.labels.iter().cloned()))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }
}

/// The candidate closest to `word` (at most two edits away), for "did you
/// mean" help; of equally close ones, the first. Words and candidates whose lengths differ by more than two
/// are never compared, nor words over 64 characters: the cost stays small
/// whatever the file holds.
pub(crate) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let n = word.chars().count();
    if n > 64 {
        return None;
    }
    candidates
        .into_iter()
        .filter(|c| c.len() <= 4 * (n + 2) && c.chars().count().abs_diff(n) <= 2)
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// A token of the file as a message quotes it: a long one (a path of a
/// thousand components) keeps its two ends.
pub(crate) fn brief(s: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 60;
    if s.len() <= MAX || s.chars().count() <= MAX {
        return s.into();
    }
    let n = s.chars().count();
    let head: String = s.chars().take(MAX / 2).collect();
    let tail: String = s.chars().skip(n - MAX / 2 + 5).collect();
    format!("{head}…{tail}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_newline_crlf_and_lone_cr() {
        let text = "ab\ncd\r\nef\rgh\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.lines(), 5);
        assert_eq!(idx.line_col(text, 0), (1, 1));
        assert_eq!(idx.line_col(text, 2), (1, 3));
        assert_eq!(idx.line_col(text, 4), (2, 2));
        assert_eq!(idx.line_col(text, 6), (2, 4));
        assert_eq!(idx.line_col(text, 7), (3, 1));
        assert_eq!(idx.line_col(text, 10), (4, 1));
        assert_eq!(idx.line_col(text, text.len()), (5, 1));
        assert_eq!(idx.line_col(text, 999), (5, 1));
    }

    #[test]
    fn columns_count_characters_on_long_lines() {
        let mut text = String::from("x\n");
        for _ in 0..1000 {
            text.push_str("é日a");
        }
        let idx = LineIndex::new(&text);
        let at = 2 + 1000 * "é日a".len();
        assert_eq!(idx.line_col(&text, at), (2, 3001));
        assert_eq!(idx.line_col(&text, 2 + 600 * "é日a".len() + 2), (2, 1802));
    }

    #[test]
    fn messages_are_tidy() {
        assert_eq!(tidy("a\tb\x1b[0m\u{85}".into()), "a\\tb\\u{1b}[0m\\u{85}");
        let long = tidy("x".repeat(10_000));
        assert_eq!(long.chars().count(), MAX_TEXT * 2 / 3 + 1 + MAX_TEXT / 4);
        assert_eq!(brief("/a"), "/a");
        let long = "/ab".repeat(1000);
        let b = brief(&long);
        assert!(b.starts_with("/ab/ab") && b.ends_with("ab/ab") && b.contains('…') && b.chars().count() <= 60, "{b}");
    }

    #[test]
    fn suggestions_skip_far_lengths_and_long_words() {
        let c = ["mount", "umount", "remount"];
        assert_eq!(closest("mout", c), Some("mount"));
        assert_eq!(closest("remout", c), Some("remount"));
        assert_eq!(closest("umont", c), Some("umount"));
        assert_eq!(closest("m", c), None);
        assert_eq!(closest(&"m".repeat(65), c), None);
    }

    #[test]
    fn spans_are_clamped_to_the_text_on_character_boundaries() {
        let t = "aé";
        assert_eq!(clamp_span(t, (2, 2)), (1, 3));
        assert_eq!(clamp_span(t, (1, 2)), (1, 3));
        assert_eq!(clamp_span(t, (5, 1)), (3, 3));
    }

    #[test]
    fn excerpts_cut_long_lines_and_map_places_back() {
        let line: String = "abcdefghij".repeat(100);
        let text = format!("first\n{line}\nlast");
        let idx = LineIndex::new(&text);
        let s = 6 + 500;
        let x = Excerpt::new("f", &text, &idx, &[(s, s + 3)]);
        assert_eq!(x.lines.len(), 3);
        assert!(x.text.starts_with("first\n…"), "{}", x.text);
        assert!(x.text.ends_with("…\nlast"), "{}", x.text);
        let at = x.to_excerpt(1, s);
        assert_eq!(&x.text[at..at + 3], &text[s..s + 3]);
        assert_eq!(x.to_file(at), s);
        // A span read without context starts at its own place, in file terms.
        let c = x.read_span(&SourceSpan::from((at, 3)), 0, 0).unwrap();
        assert_eq!((c.line(), c.column()), (1, 500));
        let c = x.read_span(&SourceSpan::from((at, 3)), 1, 1).unwrap();
        assert_eq!((c.line(), c.column(), c.line_count()), (0, 0, 3));
    }
}
