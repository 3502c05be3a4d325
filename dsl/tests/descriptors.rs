//! Descriptors in the language: which statements bind and release them, how
//! `if` blocks and failed opens are followed, and how `write`/`read`/`readdir`
//! tell a descriptor from a path.

#![allow(clippy::unwrap_used)]

/// The error codes of a scenario whose body is `body` (after one layer and a mount).
fn codes(body: &str) -> Vec<&'static str> {
    let text = format!("scenario \"d\"\nlayer base {{\n    file /a \"a\"\n    dir /d\n}}\nmount base\n{body}\n");
    match dsl::parse("d.ovl", "d", text.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(f) => f.diags.iter().map(|d| d.kind.code()).collect(),
    }
}

#[test]
fn a_descriptor_is_open_from_its_open_to_its_close() {
    assert!(codes("open /a as f rdwr\nwrite f \"x\" at 4KiB\nread f 2 at 0 => \"xx\"\nclose f").is_empty());
    assert_eq!(codes("read f"), ["ovl::fd-not-open"], "never opened");
    assert_eq!(codes("open /a as f rdonly\nclose f\nclose f"), ["ovl::fd-not-open"], "closed twice");
    assert!(codes("open /a as f rdonly\nclose f\nopen /a as f wronly\nclose f").is_empty(), "reopened after close");
    assert_eq!(codes("open /a as f rdonly\nopen /a as f rdonly"), ["ovl::fd-already-open"]);
}

#[test]
fn a_failed_open_binds_nothing() {
    assert_eq!(codes("open /nope as f rdonly => ENOENT\nread f"), ["ovl::fd-not-open"]);
    assert_eq!(codes("open /nope as f rdonly => error\nread f"), ["ovl::fd-not-open"]);
}

#[test]
fn a_descriptor_opened_in_one_branch_is_not_open_after_the_if() {
    let one = "if kernel >= 6.1 {\n    open /a as f rdonly\n}\nread f";
    assert_eq!(codes(one), ["ovl::fd-not-open"]);
    let both = "if kernel >= 6.1 {\n    open /a as f rdonly\n} else {\n    open /a as f rdwr\n}\nread f\nclose f";
    assert!(codes(both).is_empty(), "{:?}", codes(both));
    let closed_in_one = "open /a as f rdonly\nif driver == fuse {\n    close f\n}\nread f";
    assert_eq!(codes(closed_in_one), ["ovl::fd-not-open"]);
}

#[test]
fn descriptors_outlive_the_mount_but_opens_need_one() {
    assert!(codes("open /a as f rdonly\numount => EBUSY\nread f\nclose f\numount\nread f").len() == 1);
    assert!(
        codes("open /a as f rdonly\numount => EBUSY\nread /a\nclose f").is_empty(),
        "a refused umount keeps it mounted"
    );
    assert_eq!(codes("umount\nopen /a as f rdonly"), ["ovl::not-mounted"]);
}

#[test]
fn paths_and_descriptors_are_told_apart() {
    assert_eq!(codes("write /a \"x\" at 3"), ["ovl::needs-descriptor"]);
    assert_eq!(codes("read /a 10"), ["ovl::needs-descriptor"]);
    assert_eq!(codes("readdir /d max 2"), ["ovl::needs-descriptor"]);
    // A quoted name is a path (and a relative one is an error), never a descriptor.
    assert_eq!(codes("read \"f\""), ["ovl::bad-path"]);
}

#[test]
fn open_flags_are_checked() {
    assert_eq!(codes("open /a as f rdonly|nofolow"), ["ovl::bad-open-flag"]);
    assert_eq!(codes("open /a as f rdonly|rdwr"), ["ovl::bad-open-flag"], "two access modes");
    assert_eq!(codes("open /a as f creat"), ["ovl::bad-open-flag"], "no access mode");
    assert_eq!(codes("open /a as f rdonly|rdonly"), ["ovl::bad-open-flag"], "twice");
    assert!(codes("open /d as f path|directory|nofollow\nclose f").is_empty());
}

#[test]
fn results_may_be_any_error_or_a_set() {
    assert!(codes("rename /d /e => EXDEV|ENOTEMPTY\nunlink /nope => error").is_empty());
    assert_eq!(codes("unlink /a => EXDEV|ENOPE"), ["ovl::unknown-errno"]);
    assert_eq!(codes("mkdir /x => \"text\""), ["ovl::result-kind"]);
    let s = dsl::parse(
        "r.ovl",
        "r",
        b"scenario \"r\"\nlayer l {\n    dir /d\n}\nmount l\nrmdir /d  =>  error\nrmdir /d => EBUSY|ENOTEMPTY\n",
    )
    .unwrap();
    assert!(dsl::format(&s).contains("rmdir /d => error\nrmdir /d => EBUSY|ENOTEMPTY\n"));
}

#[test]
fn a_user_namespace_block_keeps_its_descriptors_to_itself() {
    let inside = "as 1000:1000 in userns {\n    open /a as f rdonly\n}\nclose f";
    assert_eq!(codes(inside), ["ovl::fd-not-open"], "opened in the child, gone after the block");
    let outside = "open /a as f rdonly\nas 1000:1000 in userns {\n    close f\n}\nread f\nclose f";
    assert!(codes(outside).is_empty(), "closed in the child only: still open here");
    let plain = "as 1000:1000 {\n    open /a as f rdonly\n}\nclose f";
    assert!(codes(plain).is_empty(), "a plain `as` block runs in this process");
}

#[test]
fn names_remembered_in_a_user_namespace_block_are_gone_after_it() {
    assert_eq!(codes("as 1000:1000 in userns {\n    stat /a as s\n}\nvalue s uid == 0"), ["ovl::unknown-name"]);
    assert!(codes("stat /a as s\nas 1000:1000 in userns {\n    value s uid == 0\n}\nvalue s uid == 0").is_empty());
    assert!(codes("as 1000:1000 in userns {\n    stat /a as s\n    value s uid == 0\n}").is_empty());
}
