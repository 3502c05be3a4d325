//! Every kind of language error, rendered as a user sees it (no colour, 80 columns).
//! One malformed file per error kind lives in `tests/errors/`; each must fail with
//! the kind its name says, and its rendering is snapshotted.

#![allow(clippy::unwrap_used)]

use std::path::Path;

fn expected_kind(stem: &str) -> &'static str {
    match stem {
        "syntax-missing-path" | "syntax-bad-result" | "long-line" => "ovl::syntax",
        "unknown-statement" => "ovl::unknown-statement",
        "unterminated-string" | "unterminated-triple" => "ovl::unterminated-string",
        "bad-escape" => "ovl::bad-escape",
        "relative-path"
        | "dotdot-path"
        | "dot-path"
        | "double-slash-path"
        | "trailing-slash-path"
        | "nul-path"
        | "long-name-path"
        | "long-path"
        | "deep-path"
        | "empty-symlink-target"
        | "bad-layer-name"
        | "options-path"
        | "option-directory"
        | "upper-name" => "ovl::bad-path",
        "unknown-layer" | "layer-path-unknown" => "ovl::unknown-layer",
        "duplicate-layer" => "ovl::duplicate-layer",
        "duplicate-path" => "ovl::duplicate-path",
        "path-conflict" => "ovl::path-conflict",
        "hardlink-undefined" => "ovl::hardlink-target",
        "unknown-errno" => "ovl::unknown-errno",
        "bad-mode" | "bad-inode-flag" | "bad-acl" => "ovl::bad-mode",
        "bad-owner" => "ovl::bad-owner",
        "bad-size" | "fs-too-small" => "ovl::bad-size",
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
        "not-mounted" | "on-not-mounted" => "ovl::not-mounted",
        "expect-layer-readonly" => "ovl::expect-layer-readonly",
        "upper-exists" => "ovl::upper-exists",
        "result-kind" => "ovl::result-kind",
        "upper-only-check" => "ovl::upper-only-check",
        "conflict-size-content" | "options-via" | "raw-merged" | "on-nested-mount" => "ovl::conflict",
        "bad-tar-path" => "ovl::bad-tar-path",
        "too-deep" => "ovl::too-deep",
        "not-utf8" => "ovl::not-utf8",
        "many-errors" => "ovl::unknown-statement",
        "bad-number" => "ovl::bad-number",
        "too-many-instances" => "ovl::too-many-instances",
        "bad-xattr" => "ovl::bad-xattr",
        "too-many-errors" => "ovl::too-many-errors",
        "bad-open-flag" => "ovl::bad-open-flag",
        "needs-descriptor" => "ovl::needs-descriptor",
        "fd-not-open" => "ovl::fd-not-open",
        "fd-already-open" => "ovl::fd-already-open",
        "unknown-name" => "ovl::unknown-name",
        "bad-field" | "not-a-handle" => "ovl::bad-field",
        "unknown-mount" => "ovl::unknown-mount",
        "unknown-dir" | "unknown-filesystem" => "ovl::unknown-dir",
        "name-clash" => "ovl::name-clash",
        "read-only-fs" | "image-packed" => "ovl::read-only-fs",
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
        // Every error has a place, and its drawing names the file, line and column.
        for d in &failure.diags {
            assert!(d.span.is_some(), "{name}: {} has no place", d.kind.code());
            assert!(text.contains(&format!("[{name}:")), "{name}: no file:line:col in\n{text}");
        }
        // A file of many errors is shown one line per error, and its last error drawn.
        let text = match failure.diags.split_last() {
            Some((last, _)) if failure.diags.len() > 12 => {
                let last = dsl::Failure { diags: vec![last.clone()], ..failure.clone() };
                format!("{}\n{}", failure.short(), last.render(false, 80))
            }
            _ => text,
        };
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
fn every_error_kind_is_in_the_language_reference() {
    let doc = std::fs::read_to_string("../docs/language.md").unwrap();
    let errors = &doc[doc.find("## Errors").unwrap()..];
    for k in dsl::ErrorKind::ALL {
        assert!(errors.contains(&format!("`{}`", k.code())), "docs/language.md, Errors: no `{}`", k.code());
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
    // Located where the limit is crossed, like any other error.
    let lines = big[..dsl::MAX_FILE_BYTES].iter().filter(|&&b| b == b'\n').count() + 1;
    let col = dsl::MAX_FILE_BYTES - big[..dsl::MAX_FILE_BYTES].iter().rposition(|&b| b == b'\n').unwrap();
    assert_eq!(failure.short(), format!("big.ovl:{lines}:{col}: ovl::too-large: the file is larger than 1024 KiB\n"));
    assert!(text.contains(&format!("[big.ovl:{lines}:{col}]")), "{text}");
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

fn failure(name: &str, src: &str) -> dsl::Failure {
    match dsl::parse(name, "t", src.as_bytes()) {
        Ok(_) => panic!("{name} parsed without error"),
        Err(f) => f,
    }
}

fn codes(f: &dsl::Failure) -> Vec<&'static str> {
    f.diags.iter().map(|d| d.kind.code()).collect()
}

/// miette cannot draw a column past 65535 (it panicked, in every command
/// that shows errors); the line is cut around the label, and the place is the real one.
#[test]
fn an_error_past_column_65535_is_drawn_with_its_real_place() {
    let bytes = std::fs::read("tests/errors/long-line.ovl").unwrap();
    let (f, text) = render("long-line.ovl", &bytes);
    assert_eq!(codes(&f), ["ovl::syntax"]);
    assert!(text.contains("[long-line.ovl:2:70007]"), "{text}");
    assert!(f.short().starts_with("long-line.ovl:2:70007: ovl::syntax:"), "{}", f.short());
    assert!(text.lines().all(|l| l.chars().count() < 200), "{text}");
    // Two labels far apart on a long line, a label as long as the line,
    // an error on a line after it: each is drawn, at its own place.
    let mut src = String::from("scenario \"t\"\nvary ");
    for i in 0..20_000 {
        src.push_str(&format!("o{i}=é|b, "));
    }
    src.push_str("o5=x\ntags a\nlayer l {\n    file /a mode 9\n}\nmount l\n");
    let f = failure("wide.ovl", &src);
    assert_eq!(codes(&f), ["ovl::too-many-instances", "ovl::vary-conflict", "ovl::header-order", "ovl::bad-mode"]);
    let text = f.render(false, 80);
    for (d, line) in f.diags.iter().zip(f.short().lines()) {
        let place = line.split(": ").next().unwrap();
        assert!(text.contains(&format!("[{place}]")), "{} at {place} not drawn:\n{text}", d.kind.code());
    }
    assert!(text.contains("[wide.ovl:2:"), "{text}");
    assert!(text.contains("[wide.ovl:5:18]"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() < 400), "{text}");
}

/// Columns count characters and lines end as the grammar's do, in the drawing
/// and in the short form alike (miette counted bytes and lone `\r` differently).
#[test]
fn places_agree_between_drawing_and_short_form() {
    for (src, place) in [
        ("scenario \"x\"\nlayer l {\n  file /a \"éé\" mode 9\n}\n", "3:21"),
        ("scenario \"x\"\rlayer l {\r\n  file /a mode 9\n}\n", "3:16"),
        ("scenario", "1:9"),
    ] {
        let f = failure("p.ovl", src);
        let last = f.diags.last().unwrap();
        let line = f.short().lines().last().unwrap().to_string();
        assert!(line.starts_with(&format!("p.ovl:{place}: {}", last.kind.code())), "{line}");
        let one = dsl::Failure { diags: vec![last.clone()], ..f.clone() };
        let text = one.render(false, 80);
        assert!(text.contains(&format!("[p.ovl:{place}]")), "{text}");
        // A label at the very end of the file is drawn too.
        assert!(text.contains('▲') || text.contains('┬'), "{text}");
    }
}

/// Each error is drawn from its own lines only: many errors in a big file
/// cost time in proportion (each used to scan the whole text).
#[test]
fn many_errors_in_a_big_file_are_drawn() {
    let mut src = String::from("scenario \"t\"\nlayer l {\n");
    for i in 0..40_000 {
        src.push_str(&format!("    file /a{i} mode 9\n"));
    }
    src.push_str("}\n");
    let f = failure("many.ovl", &src);
    assert_eq!(f.diags.len(), dsl::MAX_ERRORS + 1);
    assert_eq!(f.diags[dsl::MAX_ERRORS].kind.code(), "ovl::too-many-errors");
    assert!(f.diags[dsl::MAX_ERRORS].message.starts_with("39900 more errors"), "{}", f.diags[dsl::MAX_ERRORS].message);
    let text = f.render(false, 80);
    assert_eq!(text.matches("ovl::bad-mode").count(), dsl::MAX_ERRORS);
    assert!(text.contains("[many.ovl:102:20]"), "{}", &text[text.len() - 600..]);
    assert!(text.contains("[many.ovl:103:21]"), "{}", &text[text.len() - 600..]);
}

/// A path of 64,000 components (128 KB) took 15 s and 4 GB to check: the
/// ancestors of each path were copied, one string each. Now its length is an
/// error, and the checks of the layer are linear.
#[test]
fn a_path_of_64000_components_is_refused_cheaply() {
    let deep = "/a".repeat(64_000);
    let f = failure("deep.ovl", &format!("scenario \"t\"\nlayer l {{\n    file {deep}\n}}\nmount l\n"));
    assert_eq!(codes(&f), ["ovl::bad-path"]);
    assert!(f.diags[0].message.ends_with("is 128000 bytes long"), "{}", f.diags[0].message);
    assert!(f.diags[0].message.len() < 120, "{}", f.diags[0].message);
    assert!(f.short().starts_with("deep.ovl:3:10: ovl::bad-path"), "{}", f.short());
    // Many paths as deep as allowed, in a tree: the conflicts are still found.
    let mut src = String::from("scenario \"t\"\nlayer l {\n");
    let deep = "/d".repeat(dsl::MAX_PATH_COMPONENTS - 1);
    src.push_str(&format!("    file {deep}\n"));
    for i in 0..1000 {
        src.push_str(&format!("    file {deep}/f{i}\n"));
    }
    src.push_str(&format!("    hardlink /h -> {deep}\n}}\nmount l\n"));
    let f = failure("tree.ovl", &src);
    assert_eq!(f.diags.len(), dsl::MAX_ERRORS + 1);
    assert!(f.diags[..dsl::MAX_ERRORS].iter().all(|d| d.kind.code() == "ovl::path-conflict"), "{:?}", codes(&f));
    assert!(f.diags[dsl::MAX_ERRORS].message.starts_with("900 more errors"), "{:?}", f.diags[dsl::MAX_ERRORS]);
}

/// Linux's limits, and the depth ovlc captures, are checked before a run.
#[test]
fn names_paths_and_xattrs_within_linux_limits_pass_and_beyond_fail() {
    let src = |entry: &str| format!("scenario \"t\"\nlayer l {{\n    {entry}\n}}\nmount l\n");
    let name = |n: usize| "n".repeat(n);
    let path_of = |bytes: usize| {
        // Components of 200 bytes, then one that makes up the length.
        let mut p = String::new();
        while bytes - p.len() > 201 {
            p.push('/');
            p.push_str(&"d".repeat(200));
        }
        let rest = bytes - p.len() - 1;
        p.push('/');
        p.push_str(&"f".repeat(rest));
        p
    };
    let ok = [
        format!("file /{}", name(255)),
        format!("file {}", path_of(4095)),
        format!("dir {}", "/d".repeat(256)),
        format!("file /a xattr user.{}=\"v\"", name(250)),
        format!("file /a xattr user.k=\"{}\"", "v".repeat(65536)),
        format!("symlink /s -> \"{}\"", "t".repeat(4095)),
    ];
    for e in &ok {
        if let Err(f) = dsl::parse("ok.ovl", "t", src(e).as_bytes()) {
            panic!("{}", f.short());
        }
    }
    let bad = [
        (format!("file /{}", name(256)), "ovl::bad-path", "has a name of 256 bytes"),
        (format!("file {}", path_of(4096)), "ovl::bad-path", "is 4096 bytes long"),
        (format!("dir {}", "/d".repeat(257)), "ovl::bad-path", "is 257 components deep"),
        (format!("file /a xattr user.{}=\"v\"", name(251)), "ovl::bad-xattr", "is 256 bytes long"),
        (format!("file /a xattr user.k=\"{}\"", "v".repeat(65537)), "ovl::bad-xattr", "value is 65537 bytes long"),
        (format!("symlink /s -> \"{}\"", "t".repeat(4096)), "ovl::bad-path", "target is 4096 bytes long"),
        ("symlink /s -> \"a\\0b\"".to_string(), "ovl::bad-path", "contains a NUL byte"),
    ];
    for (e, code, says) in &bad {
        let f = failure("bad.ovl", &src(e));
        assert_eq!(codes(&f), [*code], "{}", f.short());
        assert!(f.diags[0].message.contains(says), "{}", f.diags[0].message);
        assert!(f.short().starts_with("bad.ovl:3:"), "{}", f.short());
    }
    // Operations and checks name paths and xattrs too.
    let long = format!("/{}", name(256));
    let body = format!(
        "layer l {{\n    file /a\n}}\nmount l\ncreate {long} => ENAMETOOLONG\nsetxattr /a user.{} \"v\"\n\
         setxattr /a user.k \"{}\"\nexpect upper {{\n    no xattr /a user.{}\n}}\n",
        name(251),
        "v".repeat(65537),
        name(251)
    );
    let f = failure("ops.ovl", &format!("scenario \"t\"\n{body}"));
    assert_eq!(codes(&f), ["ovl::bad-path", "ovl::bad-xattr", "ovl::bad-xattr", "ovl::bad-xattr"]);
}

/// "Did you mean" compared each unknown name with every declared layer, at a
/// cost of the product of their lengths: 20,000 unknown names among 20,000
/// layers did not finish in a minute, and two names of 500,000 characters
/// would have taken hours.
#[test]
fn suggestions_are_bounded() {
    let mut src = String::from("scenario \"t\"\n");
    for i in 0..20_000 {
        src.push_str(&format!("layer a{i} {{}}\n"));
    }
    src.push_str("mount ");
    src.push_str(&(0..20_000).map(|i| format!("b{i}")).collect::<Vec<_>>().join(", "));
    src.push('\n');
    let f = failure("layers.ovl", &src);
    assert_eq!(f.diags.len(), dsl::MAX_ERRORS + 1);
    assert_eq!(f.diags[0].help.as_deref(), Some("did you mean `a0`?"));
    assert_eq!(f.diags[40].help.as_deref(), Some("20000 layers are declared before this; declare this one too"));
    let (a, b) = ("a".repeat(200_000), "b".repeat(200_000));
    let f = failure("long.ovl", &format!("scenario \"t\"\nlayer {a} {{}}\nmount {b}\nsync => E{b}\n{a}\n"));
    assert_eq!(codes(&f), ["ovl::unknown-layer", "ovl::unknown-errno", "ovl::unknown-statement"]);
    assert!(f.diags.iter().all(|d| !d.help.as_deref().unwrap_or_default().contains("did you mean")), "{:?}", codes(&f));
}

/// A chain of `and`/`or` nests like parentheses (formatting it overflowed
/// the stack at 80,000 terms): it is limited like them.
#[test]
fn long_chains_of_conditions_are_refused() {
    let chain = |n: usize| format!("scenario \"t\"\nrequires {}\n", vec!["option a"; n + 1].join(" or "));
    let f = failure("chain.ovl", &chain(dsl::MAX_DEPTH + 1));
    assert_eq!(codes(&f), ["ovl::too-deep"]);
    // `requires ` and 65 times `option a`, 64 times ` or `: the 65th `or` is refused.
    assert!(f.short().starts_with(&format!("chain.ovl:2:{}:", 10 + 12 * 64 + 9)), "{}", f.short());
    let f = failure("chain.ovl", &chain(80_000));
    assert_eq!(codes(&f), ["ovl::too-deep"]);
    let ok = format!("{}layer l {{}}\nmount l\n", chain(dsl::MAX_DEPTH));
    let s = dsl::parse("chain.ovl", "t", ok.as_bytes()).unwrap_or_else(|f| panic!("{}", f.short()));
    assert_eq!(dsl::format(&s), ok);
}

/// A control character of the file reaches the terminal neither through the
/// drawn line nor through a message.
#[test]
fn control_characters_are_not_printed() {
    let f = failure("ctl.ovl", "scenario \"t\"\n\x1b]0;owned\x07 x\n");
    let (text, short) = (f.render(true, 80), f.short());
    assert!(!text.contains("\x1b]") && !text.contains('\x07'), "{text:?}");
    assert!(!short.contains('\x1b') && !short.contains('\x07'), "{short:?}");
    assert!(short.contains("\\u{1b}]0;owned\\u{7}"), "{short}");
}

/// A lone carriage return ends a comment, as it ends a line: what follows it
/// is a statement, reported when it is not one (it was skipped with the
/// comment, validation went lenient and `fmt` dropped it).
#[test]
fn a_lone_carriage_return_ends_a_comment() {
    let f = failure("cr.ovl", "# a\rb\nscenario \"x\"\nlayer l {\n    dir /d\n}\nmount l\n");
    assert_eq!(codes(&f), vec!["ovl::unknown-statement"], "{}", f.short());
    let f = failure("cr.ovl", "# a\r\nscenario \"x\"\nlayer l {\n    dir /d\n}\nopen /d as f rdonly\nmount l\n");
    assert!(codes(&f).contains(&"ovl::before-mount"), "{}", f.short());
}
