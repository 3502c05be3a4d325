//! `ovlc layer export` and `ovlc layer apply`, as a user runs them, read back
//! with the tar crate, GNU tar and Python's tarfile. Needs root (whiteouts are
//! character devices, opaque markers trusted xattrs).

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ovlc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovlc")).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}: {}", p.display(), std::io::Error::last_os_error());
}

/// A lower layer and an upper as the kernel leaves them after a few changes.
fn fixture(root: &Path) -> (PathBuf, PathBuf) {
    let lower = root.join("lower");
    let upper = root.join("upper");
    for d in ["etc", "var/log", "opt/app", "srv"] {
        std::fs::create_dir_all(lower.join(d)).unwrap();
    }
    std::fs::write(lower.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(lower.join("var/log/old.log"), "old").unwrap();
    std::fs::write(lower.join("opt/app/v1"), "1").unwrap();
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    std::fs::create_dir_all(upper.join("var/log")).unwrap();
    std::fs::create_dir_all(upper.join("opt/app")).unwrap();
    std::fs::create_dir_all(upper.join("new/sub")).unwrap();
    std::fs::write(upper.join("etc/hosts"), "127.0.0.1 localhost\n10.0.0.1 db\n").unwrap();
    setxattr(&upper.join("etc"), "trusted.overlay.origin", b"\x00\xfb");
    setxattr(&upper.join("etc/hosts"), "user.note", b"kept");
    setxattr(&upper.join("etc/hosts"), "trusted.overlay.origin", b"\x00\xfb");
    sh(&format!("mknod {0}/var/log/old.log c 0 0 && mknod {0}/var/log/never c 0 0", upper.display()));
    setxattr(&upper.join("opt/app"), "trusted.overlay.opaque", b"y");
    setxattr(&upper.join("new"), "user.overlay.opaque", b"y"); // opaque, but nothing below
    std::fs::write(upper.join("opt/app/v2"), "2").unwrap();
    std::fs::write(upper.join("new/sub/a"), "a").unwrap();
    std::fs::hard_link(upper.join("new/sub/a"), upper.join("new/b")).unwrap();
    std::os::unix::fs::symlink("sub/a", upper.join("new/link")).unwrap();
    sh(&format!("mkfifo {}/new/pipe", upper.display()));
    // A socket: bound, then left behind.
    let _ = std::os::unix::net::UnixListener::bind(upper.join("new/sock")).unwrap();
    (lower, upper)
}

/// A member: name, type, link name, PAX records.
type Member = (String, tar::EntryType, String, Vec<(String, Vec<u8>)>);

fn members(tar_bytes: &[u8]) -> Vec<Member> {
    let mut ar = tar::Archive::new(tar_bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
            let pax: Vec<(String, Vec<u8>)> = e
                .pax_extensions()
                .unwrap()
                .map(|x| {
                    x.map(|x| x.unwrap()).map(|x| (x.key().unwrap().to_string(), x.value_bytes().to_vec())).collect()
                })
                .unwrap_or_default();
            (name, e.header().entry_type(), link, pax)
        })
        .collect()
}

/// `ovlc layer export UPPER --lower LOWER -o OUT [EXTRA...]`.
fn export(upper: &Path, lower: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["layer", "export", upper.to_str().unwrap(), "--lower", lower.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", out.to_str().unwrap()]);
    ovlc(&args)
}

#[test]
fn export_writes_whiteouts_opaques_links_and_xattrs_by_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = fixture(dir.path());
    let out = dir.path().join("layer.tar");
    let r = export(&upper, &lower, &out, &[]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert!(text(&r.stderr).contains("note: /new/sock: a socket, skipped"), "{}", text(&r.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let m = members(&bytes);
    let names: Vec<&str> = m.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/hosts",
            "new/",
            "new/b",
            "new/link",
            "new/pipe",
            "new/sub/",
            "new/sub/a",
            "opt/",
            "opt/app/",
            "opt/app/.wh..wh..opq",
            "opt/app/v2",
            "var/",
            "var/log/",
            "var/log/.wh.old.log",
        ],
        "{m:#?}"
    );
    // /var/log/never is whited out in the upper but exists in no lower: not written.
    // /new is opaque in the upper but nothing is below it: no marker.
    let get = |n: &str| m.iter().find(|x| x.0 == n).unwrap();
    assert_eq!(get("new/sub/a").1, tar::EntryType::Link, "the second name in path order links to the first");
    assert_eq!(get("new/sub/a").2, "new/b");
    assert_eq!(get("new/link").1, tar::EntryType::Symlink);
    assert_eq!(get("new/pipe").1, tar::EntryType::Fifo);
    let hosts = &get("etc/hosts").3;
    assert!(hosts.iter().any(|(k, v)| k == "SCHILY.xattr.user.note" && v == b"kept"), "{hosts:?}");
    assert!(!bytes.windows(14).any(|w| w == b"trusted.overla"), "overlay xattrs must be stripped");
    // Deterministic headers: numeric ids, no user or group names.
    let mut ar = tar::Archive::new(bytes.as_slice());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().username().unwrap().unwrap_or(""), "");
        assert_eq!(e.header().groupname().unwrap().unwrap_or(""), "");
    }
}

#[test]
fn export_is_reproducible_with_an_mtime_clamp_and_compresses_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = fixture(dir.path());
    let export = |name: &str| {
        let out = dir.path().join(name);
        let r = export(&upper, &lower, &out, &["--mtime-clamp", "0"]);
        assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
        std::fs::read(out).unwrap()
    };
    let a = export("a.tar");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = export("b.tar");
    assert_eq!(a, b, "two exports differ");
    let gz = export("c.tar.gz");
    let zst = export("d.tar.zst");
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    assert_eq!(&zst[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    // Both apply back to the same tree as the plain tar.
    let mut trees = Vec::new();
    for f in ["a.tar", "c.tar.gz", "d.tar.zst"] {
        let target = dir.path().join(format!("applied-{f}"));
        let r = ovlc(&["layer", "apply", dir.path().join(f).to_str().unwrap(), target.to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
        trees.push(runner::tree::capture(&target, runner::tree::Dialect::Trusted).unwrap().render());
    }
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0], trees[2]);
    assert!(trees[0].contains("/var/log/old.log whiteout"), "{}", trees[0]);
    assert!(trees[0].contains("/opt/app dir 0755 0:0 opaque"), "{}", trees[0]);
    let out = ovlc(&["layer", "export", upper.to_str().unwrap(), "-o", "-"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!members(&out.stdout).is_empty());
}

#[test]
fn uppers_with_redirects_need_a_naive_diff() {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    let upper = dir.path().join("upper");
    let merged = dir.path().join("merged");
    std::fs::create_dir_all(lower.join("var/log")).unwrap();
    std::fs::write(lower.join("var/log/a"), "a").unwrap();
    std::fs::create_dir_all(upper.join("var/journal")).unwrap();
    setxattr(&upper.join("var/journal"), "trusted.overlay.redirect", b"log");
    sh(&format!("mknod {}/var/log c 0 0", upper.display()));
    let out = dir.path().join("l.tar");
    let r = export(&upper, &lower, &out, &[]);
    assert_eq!(r.status.code(), Some(2));
    assert!(text(&r.stderr).contains("redirect or metacopy entries (/var/journal)"), "{}", text(&r.stderr));
    assert!(text(&r.stderr).contains("--naive-diff"), "{}", text(&r.stderr));
    assert!(!out.exists());
    // The merged view as the kernel shows it: the directory renamed.
    std::fs::create_dir_all(merged.join("var/journal")).unwrap();
    std::fs::write(merged.join("var/journal/a"), "a").unwrap();
    let r = export(&upper, &lower, &out, &["--naive-diff", merged.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let names: Vec<String> = members(&std::fs::read(&out).unwrap()).into_iter().map(|m| m.0).collect();
    assert_eq!(names, ["var/", "var/journal/", "var/journal/a", "var/.wh.log"]);
}

#[test]
fn apply_follows_the_spec_and_keeps_same_layer_siblings() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        b.append_data(&mut h, path, data).unwrap();
    };
    add(&mut b, "app/", b"", tar::EntryType::Directory);
    add(&mut b, "app/kept", b"sibling", tar::EntryType::Regular);
    add(&mut b, "app/.wh..wh..opq", b"", tar::EntryType::Regular);
    add(&mut b, "app/.wh.gone", b"", tar::EntryType::Regular);
    add(&mut b, "./top", b"t", tar::EntryType::Regular);
    let layer = dir.path().join("l.tar");
    std::fs::write(&layer, b.into_inner().unwrap()).unwrap();
    let target = dir.path().join("applied");
    let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(text(&r.stdout).trim(), "3 entries, 1 whiteouts, 1 opaque directories, 8 bytes");
    let t = runner::tree::capture(&target, runner::tree::Dialect::Trusted).unwrap().render();
    assert_eq!(
        t,
        "/ dir 0755 0:0\n/app dir 0755 0:0 opaque\n/app/gone whiteout\n/app/kept file 0644 0:0 size=7 \"sibling\"\n/top file 0644 0:0 size=1 \"t\"\n"
    );
    // --userxattr writes the rootless dialect.
    let target2 = dir.path().join("applied-user");
    let r = ovlc(&["layer", "apply", "--userxattr", layer.to_str().unwrap(), target2.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0));
    let t2 = runner::tree::capture(&target2, runner::tree::Dialect::User).unwrap().render();
    assert!(t2.contains("/app dir 0755 0:0 opaque"), "{t2}");
}

/// Hostile layers are refused with a clear message, exit code 2, and the
/// target directory stays as it was.
#[test]
fn hostile_layers_are_refused_and_leave_the_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    type Case = (&'static str, Vec<(&'static str, tar::EntryType, &'static str, &'static [u8])>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            vec![("ok", tar::EntryType::Regular, "", b"x"), ("a/../../escape", tar::EntryType::Regular, "", b"x")],
            "climbs out",
        ),
        (
            "symlink-parent",
            vec![("s", tar::EntryType::Symlink, "/etc", b""), ("s/passwd", tar::EntryType::Regular, "", b"x")],
            "goes through the symlink s",
        ),
        (
            "duplicate",
            vec![("f", tar::EntryType::Regular, "", b"1"), ("f", tar::EntryType::Regular, "", b"2")],
            "appears twice",
        ),
        ("hardlink-out", vec![("l", tar::EntryType::Link, "../../etc/passwd", b"")], "climbs out"),
        ("hardlink-missing", vec![("l", tar::EntryType::Link, "nothing", b"")], "no such member before it"),
        ("too-big", vec![("big", tar::EntryType::Regular, "", &[7u8; 4096])], "more than 1000 bytes"),
    ];
    for (name, entries, why) in cases {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link, data) in &entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Write names raw, as a hostile tool would (the tar crate refuses `..` in append_data).
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        let layer = dir.path().join(format!("{name}.tar"));
        std::fs::write(&layer, b.into_inner().unwrap()).unwrap();
        let target = dir.path().join(format!("{name}-target"));
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        let r = ovlc(&["layer", "apply", "--max-bytes", "1000", layer.to_str().unwrap(), target.to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(2), "{name}: {}", text(&r.stderr));
        assert!(text(&r.stderr).contains(why), "{name}: {}", text(&r.stderr));
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "{name}: the target changed");
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o700);
    }
    // Nothing was left beside the targets either.
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ovlc-apply-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A non-empty target is refused before anything is read.
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "x").unwrap();
    let r = ovlc(&["layer", "apply", dir.path().join("duplicate.tar").to_str().unwrap(), full.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(text(&r.stderr).contains("is not empty"));
}

/// GNU tar and Python's tarfile read the same members, whiteouts and xattrs.
#[test]
fn gnu_tar_and_python_read_the_exported_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = fixture(dir.path());
    let out = dir.path().join("layer.tar");
    let r = export(&upper, &lower, &out, &[]);
    assert_eq!(r.status.code(), Some(0));
    let ours: Vec<String> = members(&std::fs::read(&out).unwrap()).into_iter().map(|m| m.0).collect();
    let gnu = Command::new("tar").arg("-tf").arg(&out).output().unwrap();
    assert!(gnu.status.success(), "{}", text(&gnu.stderr));
    let gnu: Vec<String> = text(&gnu.stdout).lines().map(str::to_string).collect();
    assert_eq!(gnu, ours);
    let py = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, tarfile\n\
             t = tarfile.open(sys.argv[1])\n\
             for m in t.getmembers():\n\
             \x20   x = ','.join(k[13:] + '=' + v for k, v in sorted(m.pax_headers.items()) if k.startswith('SCHILY.xattr.'))\n\
             \x20   print(m.name + ('/' if m.isdir() else ''), m.type.decode(), m.linkname, x)\n",
        )
        .arg(&out)
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py.stderr));
    let lines: Vec<String> = text(&py.stdout).lines().map(str::to_string).collect();
    let names: Vec<String> = lines.iter().map(|l| l.split(' ').next().unwrap().to_string()).collect();
    assert_eq!(names, ours);
    assert!(lines.contains(&"etc/hosts 0  user.note=kept".to_string()), "{lines:#?}");
    assert!(lines.contains(&"var/log/.wh.old.log 0  ".to_string()), "{lines:#?}");
    assert!(lines.contains(&"new/sub/a 1 new/b ".to_string()), "{lines:#?}");
}
