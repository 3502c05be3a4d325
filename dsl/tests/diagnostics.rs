//! Every kind of language error, rendered as a user sees it (no colour, 80 columns).
//! One malformed file per error kind lives in `tests/errors/`; each must fail with
//! the kind its name says, and its rendering is snapshotted.

#![allow(clippy::unwrap_used)]

use std::path::Path;

fn expected_kind(stem: &str) -> &'static str {
    match stem {
        "syntax-missing-path" | "syntax-bad-result" => "ovl::syntax",
        "unknown-statement" => "ovl::unknown-statement",
        "unterminated-string" | "unterminated-triple" => "ovl::unterminated-string",
        "bad-escape" => "ovl::bad-escape",
        "relative-path" | "dotdot-path" | "dot-path" | "double-slash-path" | "trailing-slash-path" | "nul-path" => {
            "ovl::bad-path"
        }
        "unknown-layer" => "ovl::unknown-layer",
        "duplicate-layer" => "ovl::duplicate-layer",
        "duplicate-path" => "ovl::duplicate-path",
        "path-conflict" => "ovl::path-conflict",
        "hardlink-undefined" => "ovl::hardlink-target",
        "unknown-errno" => "ovl::unknown-errno",
        "bad-mode" => "ovl::bad-mode",
        "bad-owner" => "ovl::bad-owner",
        "bad-size" => "ovl::bad-size",
        "bad-device" => "ovl::bad-device",
        "bad-version" => "ovl::bad-version",
        "unknown-driver" => "ovl::unknown-driver",
        "unknown-backing" => "ovl::unknown-backing",
        "same-inode-before-stat" => "ovl::same-inode-before-stat",
        "vary-conflict" => "ovl::vary-conflict",
        "header-order" => "ovl::header-order",
        "duplicate-header" => "ovl::duplicate-header",
        "missing-scenario" => "ovl::missing-scenario",
        "before-mount" => "ovl::before-mount",
        "not-mounted" => "ovl::not-mounted",
        "expect-layer-readonly" => "ovl::expect-layer-readonly",
        "upper-exists" => "ovl::upper-exists",
        "result-kind" => "ovl::result-kind",
        "upper-only-check" => "ovl::upper-only-check",
        "conflict-size-content" => "ovl::conflict",
        "bad-tar-path" => "ovl::bad-tar-path",
        "too-deep" => "ovl::too-deep",
        "not-utf8" => "ovl::not-utf8",
        "many-errors" => "ovl::unknown-statement",
        "bad-number" => "ovl::bad-number",
        other => panic!("tests/errors/{other}.ovl has no expected kind in this table"),
    }
}

fn render(name: &str, bytes: &[u8]) -> (dsl::Failure, String) {
    let failure = match dsl::parse(name, "t", bytes) {
        Ok(_) => panic!("{name} parsed without error"),
        Err(f) => f,
    };
    let text = failure.render(false, 80);
    (failure, text)
}

#[test]
fn every_error_kind_renders_with_location_snippet_and_help() {
    insta::glob!("errors/*.ovl", |path| {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let name = format!("errors/{stem}.ovl");
        let bytes = std::fs::read(path).unwrap();
        let (failure, text) = render(&name, &bytes);
        let want = expected_kind(&stem);
        assert!(
            failure.diags.iter().any(|d| d.kind.code() == want),
            "{name}: expected {want}, got {:?}",
            failure.diags.iter().map(|d| d.kind.code()).collect::<Vec<_>>()
        );
        // Every error with a place names the file, line and column.
        for d in &failure.diags {
            if d.span.is_some() {
                assert!(text.contains(&format!("[{name}:")), "{name}: no file:line:col in\n{text}");
            }
        }
        insta::assert_snapshot!(text);
    });
}

#[test]
fn every_error_kind_has_a_malformed_example() {
    let mut seen: Vec<&str> = vec!["ovl::too-large"]; // generated in a_file_over_one_mebibyte_is_refused
    for e in std::fs::read_dir("tests/errors").unwrap() {
        let p = e.unwrap().path();
        seen.push(expected_kind(&p.file_stem().unwrap().to_string_lossy()));
    }
    for k in dsl::ErrorKind::ALL {
        assert!(seen.contains(&k.code()), "no file in tests/errors/ shows {}", k.code());
    }
}

#[test]
fn all_errors_of_a_file_are_reported() {
    let bytes = std::fs::read(Path::new("tests/errors/many-errors.ovl")).unwrap();
    let (failure, _) = render("many-errors.ovl", &bytes);
    let kinds: Vec<&str> = failure.diags.iter().map(|d| d.kind.code()).collect();
    for k in ["ovl::bad-mode", "ovl::unknown-statement", "ovl::unknown-errno"] {
        assert!(kinds.contains(&k), "missing {k} in {kinds:?}");
    }
    assert!(failure.diags.len() >= 4, "{kinds:?}");
}

#[test]
fn a_file_over_one_mebibyte_is_refused() {
    let mut big = b"scenario \"big\"\n".to_vec();
    while big.len() <= dsl::MAX_FILE_BYTES {
        big.extend_from_slice(b"# padding padding padding padding padding padding padding padding\n");
    }
    let (failure, text) = render("big.ovl", &big);
    assert_eq!(failure.diags[0].kind.code(), "ovl::too-large");
    insta::assert_snapshot!(text);
}

#[test]
fn deep_conditions_are_refused_without_recursion() {
    let mut src = String::from("scenario \"deep\"\nrequires ");
    src.push_str(&"not ".repeat(100_000));
    src.push_str("kernel > 1\n");
    let (failure, _) = render("deep.ovl", src.as_bytes());
    assert_eq!(failure.diags[0].kind.code(), "ovl::too-deep");
    let mut src = String::from("scenario \"deep\"\nrequires ");
    src.push_str(&"(".repeat(100_000));
    let (failure, _) = render("deep.ovl", src.as_bytes());
    assert_eq!(failure.diags[0].kind.code(), "ovl::too-deep");
}

#[test]
fn short_format_is_one_line_per_error() {
    let bytes = std::fs::read("tests/errors/many-errors.ovl").unwrap();
    let (failure, _) = render("many-errors.ovl", &bytes);
    let short = failure.short();
    assert_eq!(short.lines().count(), failure.diags.len());
    assert!(short.lines().all(|l| l.starts_with("many-errors.ovl:")), "{short}");
}
