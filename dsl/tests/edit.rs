//! `edit layer` and `edit upper`: what they accept, and where.

#![allow(clippy::unwrap_used)]

fn parse(body: &str) -> Result<dsl::Scenario, Vec<&'static str>> {
    let text = format!("scenario \"e\"\nlayer base {{\n    file /a \"a\"\n}}\n{body}\n");
    dsl::parse("e.ovl", "e", text.as_bytes()).map_err(|f| f.diags.iter().map(|d| d.kind.code()).collect())
}

#[test]
fn edits_format_back_as_written() {
    let body = "mount base\numount\nedit layer base {\n    file /a \"b\" mode 0600\n    remove /gone\n    xattr /a user.k=\"v\"\n    no xattr /a user.k\n    whiteout /w\n}\nedit upper {\n    dir /d opaque\n}\nmount base";
    let s = parse(body).unwrap_or_else(|e| panic!("{e:?}"));
    let out = dsl::format(&s);
    assert!(out.contains(body), "{out}");
    assert_eq!(dsl::format(&dsl::parse("e.ovl", "e", out.as_bytes()).unwrap()), out, "idempotent");
}

#[test]
fn an_edit_names_a_declared_layer_and_an_upper_that_exists() {
    assert!(parse("edit layer base {\n    remove /a\n}\nmount base").is_ok(), "a layer may be edited before any mount");
    assert_eq!(parse("mount base\nedit layer bsae {\n    remove /a\n}").unwrap_err(), ["ovl::unknown-layer"]);
    assert_eq!(parse("edit upper {\n    remove /a\n}\nmount base").unwrap_err(), ["ovl::before-mount"]);
    assert_eq!(parse("mount base readonly\nedit upper {\n    remove /a\n}").unwrap_err(), ["ovl::before-mount"]);
    assert_eq!(parse("mount base\nedit layer base {\n    remove a\n}").unwrap_err(), ["ovl::bad-path"]);
}

#[test]
fn sockets_and_sparse_files_are_layer_entries() {
    let ok = "layer l {\n    socket /run/s mode 0700\n    file /big size 1GiB sparse\n}\nmount l";
    let s = dsl::parse("s.ovl", "s", format!("scenario \"s\"\n{ok}\n").as_bytes()).unwrap();
    assert!(dsl::format(&s).contains("    socket /run/s mode 0700\n    file /big size 1GiB sparse\n"));
    let bad = |entry: &str| {
        let text = format!("scenario \"s\"\nlayer l {{\n    {entry}\n}}\nmount l\n");
        dsl::parse("s.ovl", "s", text.as_bytes()).unwrap_err().diags.iter().map(|d| d.kind.code()).collect::<Vec<_>>()
    };
    assert_eq!(bad("file /f sparse"), ["ovl::conflict"], "no size");
    assert_eq!(bad("file /f \"x\" size 1 sparse"), ["ovl::conflict"], "content");
}

#[test]
fn a_mount_says_how_its_layers_travel() {
    let s = dsl::parse(
        "v.ovl",
        "v",
        b"scenario \"v\"\nlayer a {\n    file /a \"a\"\n}\nmount a with index=off  via   fd => error\n",
    )
    .unwrap();
    assert!(dsl::format(&s).contains("mount a with index=off via fd => error\n"));
    let twice =
        dsl::parse("v.ovl", "v", b"scenario \"v\"\nlayer a {\n    file /a \"a\"\n}\nmount a via fd via legacy\n");
    assert_eq!(twice.unwrap_err().diags[0].kind.code(), "ovl::conflict");
}

#[test]
fn edit_work_names_a_work_directory_a_mount_names() {
    let edit = "edit work w {\n    attrs /work +i\n}\n";
    assert!(parse(&format!("{edit}mount base upper u work w")).is_ok(), "`work w`, the mount after the edit");
    assert!(parse(&format!("mount base upper w\numount\n{edit}")).is_ok(), "`upper w` alone names its work w");
    assert_eq!(parse(&format!("mount base upper u\n{edit}")).unwrap_err(), ["ovl::unknown-dir"]);
    assert_eq!(
        parse(&format!("mount base upper u work x\n{}", edit.replace(" w ", " u "))).unwrap_err(),
        ["ovl::unknown-dir"]
    );
}
