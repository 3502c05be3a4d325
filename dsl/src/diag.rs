//! Language errors: what went wrong, where, and how to fix it; rendered with miette.

use std::fmt;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, Report};
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
        Self { kind, message: message.into(), span: Some(span), label: label.into(), help: None, related: Vec::new() }
    }

    /// An error about the whole file (too large, not UTF-8).
    pub fn whole_file(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), span: None, label: String::new(), help: None, related: Vec::new() }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_related(mut self, span: (usize, usize), label: impl Into<String>) -> Self {
        self.related.push(Related { start: span.0, end: span.1, label: label.into() });
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
        let primary = LabeledSpan::new_primary_with_span(Some(self.label.clone()), (start, end - start));
        let others =
            self.related.iter().map(|r| LabeledSpan::new_with_span(Some(r.label.clone()), (r.start, r.end - r.start)));
        Some(Box::new(std::iter::once(primary).chain(others)))
    }
}

/// Maps byte offsets to 1-based lines and columns (columns count characters).
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    pub fn line_col(&self, text: &str, offset: usize) -> (u32, u32) {
        let line = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let start = self.starts[line];
        let end = offset.min(text.len());
        let col = text.get(start..end).map_or(end - start, |s| s.chars().count());
        (line as u32 + 1, col as u32 + 1)
    }
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
    pub fn render(&self, color: bool, width: usize) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(width).with_links(false);
        let mut out = String::new();
        for d in &self.diags {
            let report = Report::new(d.clone()).with_source_code(NamedSource::new(&self.name, self.text.clone()));
            let mut one = String::new();
            if handler.render_report(&mut one, report.as_ref()).is_err() {
                one = format!("{}: {}\n", self.name, d.message);
            }
            if d.span.is_none() {
                // miette shows no location without a span; name the file in the text.
                one = one.replacen(&d.message, &format!("{}: {}", self.name, d.message), 1);
            }
            out.push_str(&one);
            out.push('\n');
        }
        out
    }

    /// One line per error: `file:line:col: code: message`.
    pub fn short(&self) -> String {
        let idx = LineIndex::new(&self.text);
        let mut out = String::new();
        for d in &self.diags {
            match d.span {
                Some((s, _)) => {
                    let (l, c) = idx.line_col(&self.text, s);
                    out.push_str(&format!("{}:{l}:{c}: {}: {}\n", self.name, d.kind.code(), d.message));
                }
                None => out.push_str(&format!("{}: {}: {}\n", self.name, d.kind.code(), d.message)),
            }
        }
        out
    }
}
