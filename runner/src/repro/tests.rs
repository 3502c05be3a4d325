//! The generator's own tests: what it writes, what it refuses, and that
//! hostile names and contents cannot reach the shell.

use super::*;

fn plan_of(text: &str) -> Plan {
    let s = dsl::parse("t.ovl", "t", text.as_bytes()).unwrap_or_else(|e| panic!("{}", e.short()));
    let inst = dsl::instances(&s).remove(0);
    Plan::new(inst, s, "host".into(), Driver::Kernel)
}

fn cx() -> Context {
    Context { kernel: [6, 12, 0], kernel_release: "6.12.0".into(), ..Context::default() }
}

#[test]
fn a_script_builds_mounts_and_runs_each_step() {
    let p = plan_of("scenario \"s\"\nlayer base {\n    file /etc/hosts \"h\\n\" mode 0600 owner 5:6\n    dir /d opaque\n}\nmount base with index=on\nappend /etc/hosts \"x\"\nread /nope => ENOENT\nexpect upper {\n    dir /etc\n}\n");
    let s = script(&p, &cx()).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.starts_with("#!/bin/sh\n"), "{s}");
    assert!(s.contains("exec unshare -m --propagation private sh \"$0\""), "{s}");
    assert!(s.contains("mkdir -m 0755 -- \"$I\"/layers/base/etc"), "{s}");
    assert!(s.contains("printf 'h\\012' > \"$I\"/layers/base/etc/hosts"), "{s}");
    assert!(s.contains("chown -h 5:6 \"$I\"/layers/base/etc/hosts\nchmod 00600 \"$I\"/layers/base/etc/hosts"), "{s}");
    assert!(s.contains("ovl_setxattr \"$I\"/layers/base/d trusted.overlay.opaque 79"), "{s}");
    assert!(s.contains("'opts': [b'index=on']"), "{s}");
    assert!(s.contains("R.op(8, 'read /nope', 'ENOENT', ('errno', 'ENOENT'), 'read', {'path': b'/nope'})"), "{s}");
    assert!(
        s.contains(
            "R.expect(9, 'expect upper', 'all checks hold', ('checks',), 'upper', '', False, False, \
             [(10, 'dir /etc', ('dir', b'/etc', None))], False)"
        ),
        "{s}"
    );
    assert!(s.contains("#   line 8: read /nope\n"), "the header lists the steps: {s}");
    assert!(s.ends_with("R.finish()\nOVLC_PY_END\nexit $?\n"), "{s}");
}

#[test]
fn branches_follow_the_target() {
    let text = "scenario \"s\"\nlayer base {\n    dir /d\n}\nif kernel >= 6.5 {\n    mount base with redirect_dir=on\n} else {\n    mount base\n}\n";
    let p = plan_of(text);
    let new = script(&p, &cx()).unwrap_or_else(|e| panic!("{e}"));
    assert!(new.contains("redirect_dir=on"));
    let old = script(&p, &Context { kernel: [5, 10, 0], ..cx() }).unwrap_or_else(|e| panic!("{e}"));
    assert!(!old.contains("redirect_dir=on"));
}

#[test]
fn what_cannot_be_expressed_is_refused_with_its_place() {
    let p = plan_of("scenario \"s\"\nlayer base {\n    dir /d\n}\nmount base\nreconfigure with ro\n");
    match script(&p, &cx()) {
        Err(Refusal::Cannot { file, line, col, step, .. }) => {
            assert_eq!((file.as_str(), line, col, step.as_str()), ("t.ovl", 6, 1, "reconfigure with ro"));
        }
        other => panic!("{other:?}"),
    }
    let p = plan_of("scenario \"s\"\nrequires kernel >= 9.0\nlayer base {\n    dir /d\n}\nmount base\n");
    assert!(matches!(script(&p, &cx()), Err(Refusal::Skip(w)) if w.contains("kernel >= 9.0")));
    let mut p = plan_of("scenario \"s\"\nlayer base {\n    dir /d\n}\nmount base\n");
    p.driver = Driver::Fuse;
    assert!(script(&p, &cx()).is_err_and(|e| e.to_string().contains("fuse")));
}

#[test]
fn quoting_keeps_hostile_bytes_away_from_the_shell() {
    for t in ["a b", "it's", "$(reboot)", "`id`", "a\nb", "back\\slash", "-rf", "\"q\"", "x;y|z&", ""] {
        let q = sh_quote(t);
        // Inside single quotes nothing is special; a quote is closed, escaped and reopened.
        if q != t {
            assert!(q.starts_with('\'') && q.ends_with('\''), "{q}");
            assert_eq!(q[1..q.len() - 1].replace("'\\''", "'"), t);
        } else {
            assert!(t.bytes().all(|c| c.is_ascii_alphanumeric() || b"_-./:@%+=,".contains(&c)), "{t}");
        }
    }
    let f = printf_format(b"-100% \\ 'q'\n\xff$x`y`");
    assert_eq!(f, "\\055100%% \\\\ \\047q\\047\\012\\377$x`y`");
    assert!(!f.contains('\''));
    let b = py_bytes(b"'\\\nOVLC_PY_END\n\xff");
    assert_eq!(b, "b'\\'\\\\\\x0aOVLC_PY_END\\x0a\\xff'");
    assert!(b.bytes().all(|c| (0x20..0x7f).contains(&c)));
    assert_eq!(py_str("é'\n"), "'\\u00e9\\'\\u000a'");
}

#[test]
fn from_a_run_each_step_expects_what_ovlc_got() {
    let p = plan_of("scenario \"s\"\nlayer base {\n    dir /d\n}\nmount base\nrename /d /e\nread /d/x => ENOENT\n");
    let run = vec![
        (5, "mount base".to_string(), "ok".to_string()),
        (6, "rename /d /e".to_string(), "EXDEV".to_string()),
        (7, "read /d/x".to_string(), "ENOENT".to_string()),
    ];
    let s = script(&p, &Context { from_run: Some(run), ..cx() }).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.contains("R.op(6, 'rename /d /e', 'EXDEV', ('exact', 'EXDEV'), 'rename'"), "{s}");
    assert!(s.contains("R.op(7, 'read /d/x', 'ENOENT', ('exact', 'ENOENT'), 'read'"), "{s}");
    assert!(s.contains("expects the result ovlc's run got"), "{s}");
    // A run whose steps do not line up leaves the scenario's expectations.
    let other = vec![(9, "rename /x /y".to_string(), "EXDEV".to_string())];
    let s = script(&p, &Context { from_run: Some(other), ..cx() }).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.contains("R.op(6, 'rename /d /e', 'ok', ('ok',), 'rename'"), "{s}");
}

#[test]
fn tmpfs_filesystems_and_descriptors_are_expressed() {
    let p = plan_of(
        "scenario \"s\"\nfilesystem low tmpfs size 16MiB\nfilesystem up tmpfs\nlayer base on low {\n    file /f \"x\"\n}\nmount base upper u on up\nopen /f as f rdwr\nwrite f \"y\" at 1\nread f 2 at 0 => \"xy\"\nclose f\n",
    );
    let s = script(&p, &cx()).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.contains("mount -t tmpfs -o nodev,size=16777216,mode=0755 ovlc \"$I\"/fs/low"), "{s}");
    assert!(s.contains("printf 'x' > \"$I\"/fs/low/layers/base/f"), "{s}");
    assert!(s.contains("'upper': ('u', b'fs/up/uppers/u'), 'workkey': 'u', 'work': b'fs/up/works/u'"), "{s}");
    assert!(s.contains("'fd-write', {'fd': 'f', 'data': b'y', 'at': 1})"), "{s}");
    assert!(s.contains("'fd-read', {'fd': 'f', 'size': 2, 'at': 0})"), "{s}");
    let p = plan_of("scenario \"s\"\nfilesystem img squashfs\nlayer base on img {\n    file /f \"x\"\n}\nmount base\n");
    assert!(script(&p, &cx()).is_err_and(|e| e.to_string().contains("t.ovl:2:1: `filesystem img squashfs`")));
}
