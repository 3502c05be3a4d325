//! Starting scenarios for `ovlc new`: the templates (each a small scenario
//! that passes on the host target, in the canonical layout, with comments
//! saying what to write where) and the title a file's name gives one.

use dsl::ast::Stmt;
use dsl::text::Bytes;

use crate::error::{Error, Result};

/// A kind of scenario to start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// A lab step: two lowers, one upper, a copy-up and a whiteout.
    Lab,
    /// A behaviour that changed between kernels: `requires` and `if kernel >= X`.
    KernelDifference,
    /// A CVE regression: the attack's steps with the fixed kernel's results.
    Cve,
    /// Image layers, whiteouts and an opaque directory; the upper exported as a layer.
    Container,
}

impl Template {
    pub const ALL: [Template; 4] = [Template::Lab, Template::KernelDifference, Template::Cve, Template::Container];

    /// The name `--template` takes.
    pub fn name(self) -> &'static str {
        match self {
            Template::Lab => "lab",
            Template::KernelDifference => "kernel-difference",
            Template::Cve => "cve",
            Template::Container => "container",
        }
    }

    /// What the template's example does, in a few words.
    pub fn summary(self) -> &'static str {
        match self {
            Template::Lab => "two lowers, a copy-up and a whiteout",
            Template::KernelDifference => "user xattrs through an overlay on tmpfs, changed in kernel 6.6",
            Template::Cve => "a root-only lower file neither read nor written by a user",
            Template::Container => "inline image layers with a whiteout and an opaque directory, exported",
        }
    }

    /// The template as kept in the source tree.
    pub fn source(self) -> &'static str {
        match self {
            Template::Lab => include_str!("templates/lab.ovl"),
            Template::KernelDifference => include_str!("templates/kernel-difference.ovl"),
            Template::Cve => include_str!("templates/cve.ovl"),
            Template::Container => include_str!("templates/container.ovl"),
        }
    }
}

/// The template with `title` as its `scenario` title, in the canonical
/// layout (the title escaped as the language wants it).
pub fn render(template: Template, title: &str) -> Result<String> {
    let name = format!("{}.ovl", template.name());
    let mut s = dsl::parse(&name, template.name(), template.source().as_bytes())
        .map_err(|f| Error::Infrastructure(format!("the built-in template {name} is not valid: {}", f.short())))?;
    for item in &mut s.body.items {
        if let Stmt::Scenario(t) = &mut item.node {
            t.node = Bytes(title.as_bytes().to_vec());
        }
    }
    Ok(dsl::format(&s))
}

/// The title a file name (without `.ovl`) gives: a leading number dropped,
/// `-` and `_` as spaces, the first letter capital (`11-my-step` → "My
/// step"); a name starting with a CVE id keeps it in front, as the library's
/// CVE scenarios do (`cve-2023-0386-unmapped-owner` → "CVE-2023-0386:
/// unmapped owner").
pub fn title_from_name(stem: &str) -> String {
    if let Some((id, rest)) = cve_prefix(stem) {
        let rest = words(rest);
        return if rest.is_empty() { id } else { format!("{id}: {rest}") };
    }
    let title = words(without_number(stem));
    let title = if title.is_empty() { words(stem) } else { title };
    if title.is_empty() {
        return stem.to_string();
    }
    let mut chars = title.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The words of a name: split at `-`, `_` and white space, joined by one space.
fn words(s: &str) -> String {
    s.split(|c: char| c == '-' || c == '_' || c.is_whitespace()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// `11-my-step` → `my-step`: the digits and the separator after them, when
/// something follows.
fn without_number(s: &str) -> &str {
    let rest = s.trim_start_matches(|c: char| c.is_ascii_digit());
    if rest.len() == s.len() {
        return s;
    }
    match rest.strip_prefix(['-', '_', '.', ' ']) {
        Some(after) if !after.is_empty() => after,
        _ => s,
    }
}

/// `cve-2023-0386-rest` → (`CVE-2023-0386`, `rest`), for a year of four
/// digits and a number of at least four.
fn cve_prefix(s: &str) -> Option<(String, &str)> {
    let head = s.get(..4)?;
    if !head.eq_ignore_ascii_case("cve-") {
        return None;
    }
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &s[4..];
    let year = digits(rest);
    if year != 4 || rest.as_bytes().get(4) != Some(&b'-') {
        return None;
    }
    let number = digits(&rest[5..]);
    if number < 4 {
        return None;
    }
    let end = 5 + number;
    let tail = &rest[end..];
    if !(tail.is_empty() || tail.starts_with(['-', '_'])) {
        return None;
    }
    Some((format!("CVE-{}", &rest[..end]), tail))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn titles_come_from_names() {
        for (name, title) in [
            ("11-my-step", "My step"),
            ("my_step", "My step"),
            ("copy-up", "Copy up"),
            ("11", "11"),
            ("11-", "11"),
            ("007.x", "X"),
            ("a--b__c", "A b c"),
            ("élan-vital", "Élan vital"),
            ("cve-2023-0386-unmapped-owner-copy-up", "CVE-2023-0386: unmapped owner copy up"),
            ("CVE-2015-8660", "CVE-2015-8660"),
            ("cve-2015-86", "Cve 2015 86"),
            ("cve-20a5-8660-x", "Cve 20a5 8660 x"),
            ("cve-2015-8660x", "Cve 2015 8660x"),
            ("---", "---"),
        ] {
            assert_eq!(title_from_name(name), title, "{name}");
        }
    }

    #[test]
    fn every_template_is_valid_canonical_and_titled_by_its_placeholder() {
        for t in Template::ALL {
            let s = dsl::parse(t.name(), t.name(), t.source().as_bytes()).unwrap_or_else(|f| panic!("{}", f.short()));
            assert_eq!(dsl::format(&s), t.source(), "{} is not in the canonical layout", t.name());
            assert_eq!(s.title(), format!("Template: {}", t.name()));
            assert!(s.about().is_some_and(|a| a.starts_with("Say ")), "{}", t.name());
            assert!(!s.tags().is_empty(), "{}", t.name());
        }
    }

    #[test]
    fn a_rendered_template_holds_any_title_and_only_the_title_changes() {
        for title in ["My step", "a \"quoted\" \\ title", "two\nlines\t\u{1b}", "ünï", ""] {
            for t in Template::ALL {
                let text = render(t, title).unwrap();
                let s =
                    dsl::parse("x.ovl", "x", text.as_bytes()).unwrap_or_else(|f| panic!("{title:?}: {}", f.short()));
                assert_eq!(s.title(), title);
                assert_eq!(dsl::format(&s), text, "{title:?}");
                let placeholder = format!("scenario \"Template: {}\"", t.name());
                let first = text.lines().position(|l| l.starts_with("scenario ")).unwrap();
                let mut old: Vec<&str> = t.source().lines().collect();
                let mut new: Vec<&str> = text.lines().collect();
                assert_eq!(old.remove(first), placeholder);
                new.remove(first);
                assert_eq!(old, new, "{title:?}");
            }
        }
    }

    #[test]
    fn template_names_are_the_command_line_s() {
        use clap::ValueEnum;
        for t in Template::ALL {
            assert_eq!(t.to_possible_value().unwrap().get_name(), t.name());
        }
        assert_eq!(Template::value_variants().len(), Template::ALL.len());
    }
}
