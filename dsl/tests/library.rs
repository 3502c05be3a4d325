//! The scenario library: every file parses, formats to itself, and its tree is snapshotted.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

mod common;

fn library() -> Vec<PathBuf> {
    common::library_files()
}

fn load(p: &Path) -> dsl::Scenario {
    match dsl::load(p) {
        Ok(s) => s,
        Err(dsl::LoadError::Invalid(f)) => panic!("{}", f.render(false, 100)),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_lab_has_at_least_eight_scenarios() {
    let lab = library().into_iter().filter(|p| p.to_string_lossy().contains("/lab/")).count();
    assert!(lab >= 8, "only {lab} lab scenarios");
}

#[test]
fn library_trees_are_snapshotted() {
    for p in library() {
        let s = load(&p);
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_suffix(s.id.replace('/', "__"));
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_yaml_snapshot!("ast", s.body));
    }
}

#[test]
fn library_is_formatted_and_formatting_round_trips() {
    for p in library() {
        let s = load(&p);
        let text = std::fs::read_to_string(&p).unwrap();
        let out = dsl::format(&s);
        assert_eq!(out, text, "{} is not in the canonical layout (run `ovlc fmt`)", p.display());
        let again = dsl::parse(&s.file, &s.id, out.as_bytes()).unwrap();
        assert_eq!(again, s);
        // The tree also survives serde, as a plan sent to a VM guest does.
        let json = serde_json::to_string(&s).unwrap();
        let back: dsl::Scenario = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
