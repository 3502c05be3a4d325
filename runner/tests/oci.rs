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

// ------------------------------------------------------------------ layers from strangers

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// A member of a hand-made layer: name, type, PAX records, data.
type Raw<'a> = (&'a str, tar::EntryType, &'a [(&'a str, &'a [u8])], &'a [u8]);

fn layer_tar(members: &[Raw<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, pax, data) in members {
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().copied()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// `.ovlc-apply-*` staging directories left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ovlc-apply-"))
        .collect()
}

fn lgetxattr(p: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// A version 2 `security.capability` value granting CAP_NET_RAW (13), effective.
const CAP_NET_RAW: &[u8] = &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Overlay metadata of every dialect in PAX xattr records, and whiteouts in
/// the overlay's own form, are forgeries: refused with the member and the
/// xattr named. File capabilities need --allow-capabilities (and a scenario's
/// `layer from` never allows them); ordinary xattrs stay.
#[test]
fn forged_overlay_metadata_is_refused_and_capabilities_need_a_flag() {
    use tar::EntryType::{Char, Directory, Regular};
    let dir = tempfile::tempdir().unwrap();
    let forged: &[(&str, tar::EntryType, &str, &[u8])] = &[
        ("etc/", Directory, "trusted.overlay.redirect", b"/etc"),
        ("bin/sh", Regular, "trusted.overlay.metacopy", b""),
        ("opt/", Directory, "trusted.overlay.opaque", b"y"),
        ("srv/", Directory, "user.overlay.redirect", b"/srv2"),
        ("var/", Directory, "user.fuseoverlayfs.opaque", b"y"),
        ("usr/bin/su", Regular, "user.containers.override_stat", b"0:0:04755"),
        ("usr/bin/passwd", Regular, "security.fuseoverlayfs.override_stat", b"0:0:04755"),
        ("usr/bin/ping", Regular, "security.capability", CAP_NET_RAW),
        ("usr/bin/x", Regular, "security.SMACK64EXEC", b"_"),
    ];
    for (i, (member, kind, xattr, value)) in forged.iter().enumerate() {
        let key = format!("SCHILY.xattr.{xattr}");
        let pax: &[(&str, &[u8])] = &[(key.as_str(), value)];
        let data: &[u8] = if *kind == Regular { b"x" } else { b"" };
        let layer = dir.path().join(format!("forged-{i}.tar"));
        std::fs::write(&layer, layer_tar(&[("ok", Regular, &[], b"ok"), (member, *kind, pax, data)])).unwrap();
        let target = dir.path().join(format!("forged-{i}"));
        let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), target.to_str().unwrap()]);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{xattr}: {err}");
        assert!(err.contains(&format!("member {member} has the xattr {xattr}")), "{xattr}: {err}");
        assert!(err.contains(layer.to_str().unwrap()), "{err}");
        assert!(!target.exists(), "{xattr}: the target was made");
    }
    // A 0/0 character device is the overlay's whiteout, not the spec's.
    let layer = dir.path().join("whiteout.tar");
    std::fs::write(&layer, layer_tar(&[("etc/", Directory, &[], b""), ("etc/shadow", Char, &[], b"")])).unwrap();
    let target = dir.path().join("whiteout");
    let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
    assert!(text(&r.stderr).contains("member etc/shadow is a 0/0 character device"), "{}", text(&r.stderr));
    assert!(!target.exists());
    // File capabilities, when allowed.
    let caps = dir.path().join("forged-7.tar");
    let target = dir.path().join("caps");
    let r = ovlc(&["layer", "apply", "--allow-capabilities", caps.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(lgetxattr(&target.join("usr/bin/ping"), b"security.capability").as_deref(), Some(CAP_NET_RAW));
    // A scenario's `layer NAME from "x.tar"` never allows them.
    let root = dir.path().join("scenario-layer");
    std::fs::create_dir(&root).unwrap();
    let e = runner::exec::layer::unpack_oci(&caps, &root, "trusted.overlay.opaque").unwrap_err().to_string();
    assert!(e.contains("usr/bin/ping has the xattr security.capability"), "{e}");
    assert!(lgetxattr(&root.join("usr/bin/ping"), b"security.capability").is_none());
    // Ordinary xattrs are kept.
    let pax: &[(&str, &[u8])] = &[
        ("SCHILY.xattr.user.note", b"kept"),
        ("SCHILY.xattr.trusted.other", b"also"),
        ("SCHILY.xattr.security.selinux", b"system_u:object_r:etc_t:s0"),
    ];
    let layer = dir.path().join("ordinary.tar");
    std::fs::write(&layer, layer_tar(&[("f", Regular, pax, b"f")])).unwrap();
    let target = dir.path().join("ordinary");
    let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let f = target.join("f");
    assert_eq!(lgetxattr(&f, b"user.note").as_deref(), Some(&b"kept"[..]));
    assert_eq!(lgetxattr(&f, b"trusted.other").as_deref(), Some(&b"also"[..]));
    assert_eq!(lgetxattr(&f, b"security.selinux").as_deref(), Some(&b"system_u:object_r:etc_t:s0"[..]));
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

/// Whatever is not a whole tar archive is bad input (exit 2), named by its
/// file, told in ovlc's words: no byte of the file is echoed.
#[test]
fn broken_tarballs_are_bad_input_named_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        layer_tar(&[("a", tar::EntryType::Regular, &[], b"alpha"), ("b", tar::EntryType::Regular, &[], b"beta")]);
    assert_eq!(good.len(), 4 * 512 + 1024);
    // A header whose checksum holds but whose size field is junk, named with
    // a terminal escape (the tar crate quotes both in its error).
    let mut junk = tar::Header::new_gnu();
    let name = b"evil\x1b]0;pwned\x07";
    junk.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    junk.as_gnu_mut().unwrap().size.copy_from_slice(b"\x1b[31mJUNK\x00\x00\x00");
    junk.set_mode(0o644);
    junk.set_entry_type(tar::EntryType::Regular);
    junk.set_cksum();
    let mut junk_size = good[..1024].to_vec();
    junk_size.extend_from_slice(junk.as_bytes());
    junk_size.extend_from_slice(&[0; 1024]);
    let mut bad_first = good.clone();
    bad_first[3] ^= 0x20; // the first member's name, under its checksum
    let mut bad_second = good.clone();
    bad_second[1024] ^= 0x20;
    let marker = b"MARKER\x1b[31m not a tar at all\n".repeat(40);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.tar", Vec::new(), "is empty"),
        ("text.tar", marker.clone(), "is not a tar archive"),
        ("short.tar", marker[..100].to_vec(), "is not a tar archive"),
        ("mid-member.tar", good[..512 + 3].to_vec(), "is truncated: it ends inside the data of member a"),
        ("boundary.tar", good[..2048].to_vec(), "is truncated: it ends after member b without the two zero blocks"),
        ("one-zero-block.tar", good[..2560].to_vec(), "with one of the two zero blocks"),
        ("bad-first-checksum.tar", bad_first, "bad checksum in its first tar header"),
        ("bad-second-checksum.tar", bad_second, "the tar header after member a has a bad checksum"),
        ("junk-size.tar", junk_size, "the tar header after member a is malformed"),
    ];
    for (name, bytes, why) in &cases {
        let layer = dir.path().join(name);
        std::fs::write(&layer, bytes).unwrap();
        let target = dir.path().join(format!("{name}.d"));
        let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), target.to_str().unwrap()]);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&format!("{}: ", layer.display())), "{name}: {err}");
        assert!(err.contains(why), "{name}: {err}");
        assert!(!err.contains('\x1b') && !err.contains("MARKER") && !err.contains("JUNK"), "{name} echoed: {err:?}");
        assert!(!target.exists(), "{name}");
    }
    // Compressed: cut short, and a stream of something else.
    std::fs::write(dir.path().join("good.tar"), &good).unwrap();
    std::fs::write(dir.path().join("text"), &marker).unwrap();
    sh(&format!(
        "cd {0} && gzip -c good.tar | head -c 40 > cut.tar.gz && gzip -c text > text.tar.gz && : | gzip -c > nothing.tar.gz",
        dir.path().display()
    ));
    for (name, why) in [
        ("cut.tar.gz", "gzip or zstd data is corrupt or truncated"),
        ("text.tar.gz", "not a tar"),
        ("nothing.tar.gz", "is empty"),
    ] {
        let layer = dir.path().join(name);
        let target = dir.path().join(format!("{name}.d"));
        let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), target.to_str().unwrap()]);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(why) && err.contains(name), "{name}: {err}");
        assert!(!err.contains('\x1b') && !err.contains("MARKER"), "{name} echoed: {err:?}");
    }
    // A file that is not there, or a directory, is bad input too.
    for f in ["missing.tar", "."] {
        let r = ovlc(&["layer", "apply", dir.path().join(f).to_str().unwrap(), dir.path().join("x").to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(2), "{f}: {}", text(&r.stderr));
    }
    // The whole archive still applies.
    let target = dir.path().join("good");
    let r = ovlc(&["layer", "apply", dir.path().join("good.tar").to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(std::fs::read(target.join("b")).unwrap(), b"beta");
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

/// GNU tar's sparse members, in its own format and the three PAX ones, apply
/// with the file's content and size (holes and all), and count their size
/// against --max-bytes.
#[test]
fn gnu_tar_sparse_members_apply_with_their_content_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Hole, data, hole; data, hole, data; hole, data at the very end; all hole.
    sh(&format!(
        "cd {} && truncate -s 3M mid && printf MIDDLE | dd of=mid bs=1 seek=1500000 conv=notrunc status=none && \
         printf head > ends && truncate -s 2M ends && printf tail >> ends && \
         truncate -s 1M tail && printf END >> tail && truncate -s 512K none",
        src.display()
    ));
    for (name, flags) in [
        ("gnu", "--format=gnu"),
        ("pax-0.0", "--format=posix --sparse-version=0.0"),
        ("pax-0.1", "--format=posix --sparse-version=0.1"),
        ("pax-1.0", "--format=posix --sparse-version=1.0"),
    ] {
        let layer = dir.path().join(format!("{name}.tar"));
        sh(&format!("tar {flags} --sparse -cf {} -C {} mid ends tail none", layer.display(), src.display()));
        let target = dir.path().join(name);
        let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), target.to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(0), "{name}: {}", text(&r.stderr));
        let mut names: Vec<String> =
            std::fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["ends", "mid", "none", "tail"], "{name}");
        for f in ["mid", "ends", "tail", "none"] {
            let (a, b) = (std::fs::read(src.join(f)).unwrap(), std::fs::read(target.join(f)).unwrap());
            assert_eq!(a.len(), b.len(), "{name}: the size of {f}");
            assert!(a == b, "{name}: the content of {f}");
        }
        assert!(text(&r.stdout)
            .ends_with(&format!("{} bytes\n", 3 * 1024 * 1024 + 2 * 1024 * 1024 + 4 + 1024 * 1024 + 3 + 512 * 1024)));
        // Sparse files count their size, not their data.
        let r = ovlc(&[
            "layer",
            "apply",
            "--max-bytes",
            "3000000",
            layer.to_str().unwrap(),
            dir.path().join(format!("{name}-max")).to_str().unwrap(),
        ]);
        assert_eq!(r.status.code(), Some(2), "{name}: {}", text(&r.stderr));
        assert!(text(&r.stderr).contains("more than 3000000 bytes"), "{name}: {}", text(&r.stderr));
    }
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

/// A target that is a symlink (dangling or not) is refused before anything is
/// staged; any failure after staging removes the staging directory.
#[test]
fn apply_refuses_a_symlink_target_and_leaves_no_staging_directory() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("l.tar");
    std::fs::write(&layer, layer_tar(&[("f", tar::EntryType::Regular, &[], b"f")])).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::os::unix::fs::symlink("/nonexistent/ovlc-target", dir.path().join("dangling")).unwrap();
    std::os::unix::fs::symlink(&empty, dir.path().join("to-empty")).unwrap();
    for link in ["dangling", "to-empty"] {
        let target = dir.path().join(link);
        let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), target.to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(2), "{link}: {}", text(&r.stderr));
        assert!(text(&r.stderr).contains("is a symlink"), "{link}: {}", text(&r.stderr));
        assert!(std::fs::symlink_metadata(&target).unwrap().file_type().is_symlink(), "{link} was replaced");
        assert!(leftovers(dir.path()).is_empty(), "{link}: {:?}", leftovers(dir.path()));
    }
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), dir.path().join("file").to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
    assert!(text(&r.stderr).contains("is not a directory"), "{}", text(&r.stderr));
    // Refused after staging, at a member deep in read-only directories.
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o555);
    h.set_size(0);
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut h.clone(), "ro/", std::io::empty()).unwrap();
    b.append_data(&mut h.clone(), "ro/deeper/", std::io::empty()).unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o444);
    h.set_size(1);
    b.append_data(&mut h.clone(), "ro/deeper/f", &b"f"[..]).unwrap();
    let late = dir.path().join("late.tar");
    let mut bytes = b.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024); // no end of archive
    std::fs::write(&late, bytes).unwrap();
    let r = ovlc(&["layer", "apply", late.to_str().unwrap(), dir.path().join("late").to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    assert!(!dir.path().join("late").exists());
}

/// Names are bytes: an upper's names that are not UTF-8 are exported as they
/// are on disk (entries, whiteouts of both forms, hard links, xattr names),
/// and applied back to the same bytes.
#[test]
fn export_and_apply_keep_names_that_are_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let p = |base: &Path, b: &[u8]| base.join(OsStr::from_bytes(b));
    let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
    std::fs::create_dir_all(upper.join("d")).unwrap();
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::write(p(&upper, b"d/caf\xe9"), "A").unwrap();
    std::fs::write(p(&upper, b"\xff\x1b[31m"), "B").unwrap();
    std::fs::create_dir(p(&upper, b"dir\xfe")).unwrap();
    std::fs::write(p(&upper, b"dir\xfe/child"), "C").unwrap();
    std::fs::hard_link(p(&upper, b"dir\xfe/child"), p(&upper, b"dir\xfe/hl\xfd")).unwrap();
    std::fs::write(p(&lower, b"gone\xfa"), "old").unwrap();
    std::fs::write(p(&lower, b"fuse\xfb"), "old").unwrap();
    let wh = std::ffi::CString::new(p(&upper, b"gone\xfa").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR, 0) }, 0);
    std::fs::write(p(&upper, b".wh.fuse\xfb"), "").unwrap(); // fuse-overlayfs' whiteout form
    let c = std::ffi::CString::new(p(&upper, b"d/caf\xe9").as_os_str().as_bytes()).unwrap();
    let r = unsafe { libc::lsetxattr(c.as_ptr(), c"user.n\xe9".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(r, 0);
    let out = dir.path().join("l.tar");
    let r = export(&upper, &lower, &out, &[]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let mut ar = tar::Archive::new(bytes.as_slice());
    // Name, link name, PAX keys.
    type Got = (Vec<u8>, Vec<u8>, Vec<Vec<u8>>);
    let mut got: Vec<Got> = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path_bytes().into_owned();
        let link = e.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        let keys = e
            .pax_extensions()
            .unwrap()
            .map(|x| x.map(|x| x.unwrap().key_bytes().to_vec()).collect())
            .unwrap_or_default();
        got.push((name, link, keys));
    }
    let names: Vec<&[u8]> = got.iter().map(|g| g.0.as_slice()).collect();
    assert_eq!(
        names,
        [
            &b"d/"[..],
            b"d/caf\xe9",
            b"dir\xfe/",
            b"dir\xfe/child",
            b"dir\xfe/hl\xfd",
            b".wh.fuse\xfb",
            b".wh.gone\xfa",
            b"\xff\x1b[31m",
        ],
        "{got:?}"
    );
    assert_eq!(got[4].1, b"dir\xfe/child", "the hard link's target");
    assert_eq!(got[1].2, [b"SCHILY.xattr.user.n\xe9".to_vec()], "the xattr's name");
    // GNU tar lists the same bytes.
    let gnu = Command::new("tar").args(["--quoting-style=literal", "-tf"]).arg(&out).output().unwrap();
    let want: &[u8] = b"\nd/caf\xe9\n";
    assert!(gnu.stdout.windows(want.len()).any(|w| w == want), "{:?}", text(&gnu.stdout));
    // Applied, the same bytes again.
    let target = dir.path().join("applied");
    let r = ovlc(&["layer", "apply", out.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(std::fs::read(p(&target, b"d/caf\xe9")).unwrap(), b"A");
    assert_eq!(std::fs::read(p(&target, b"\xff\x1b[31m")).unwrap(), b"B");
    assert_eq!(lgetxattr(&p(&target, b"d/caf\xe9"), b"user.n\xe9").as_deref(), Some(&b"v"[..]));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(p(&target, b"dir\xfe/hl\xfd")).unwrap().nlink(), 2);
    for w in [&b"gone\xfa"[..], b"fuse\xfb"] {
        let m = std::fs::symlink_metadata(p(&target, w)).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()) && m.rdev() == 0, "{w:?}");
    }
    // A naive diff reads the merged view's bytes, and the lowers' for what is gone.
    let merged = dir.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    std::fs::write(p(&merged, b"fuse\xfb"), "old").unwrap();
    std::fs::write(p(&merged, b"new\xe9"), "N").unwrap();
    let naive = dir.path().join("naive.tar");
    let r = export(&upper, &lower, &naive, &["--naive-diff", merged.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let mut ar = tar::Archive::new(std::fs::File::open(&naive).unwrap());
    let names: Vec<Vec<u8>> = ar.entries().unwrap().map(|e| e.unwrap().path_bytes().into_owned()).collect();
    assert_eq!(names, [b".wh.gone\xfa".to_vec(), b"new\xe9".to_vec()]);
    // Two names the tree cannot tell apart are refused, not merged.
    let twins = dir.path().join("twins");
    std::fs::create_dir(&twins).unwrap();
    std::fs::write(p(&twins, b"a\xfe"), "1").unwrap();
    std::fs::write(p(&twins, b"a\xff"), "2").unwrap();
    let r = ovlc(&["layer", "export", twins.to_str().unwrap(), "-o", dir.path().join("twins.tar").to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
    assert!(text(&r.stderr).contains("a\\xfe, a\\xff"), "{}", text(&r.stderr));
    assert!(!dir.path().join("twins.tar").exists());
}

/// Applied members keep their modification times: the header's seconds, or a
/// PAX `mtime` record with its fraction (also before the epoch); directories
/// keep theirs although entries were made in them afterwards; symlinks their
/// own.
#[test]
fn apply_keeps_member_times() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, mtime: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(mtime);
        if kind == tar::EntryType::Symlink {
            h.set_link_name("f").unwrap();
        }
        b.append_data(&mut h, path, &b""[..]).unwrap();
    };
    add(&mut b, "d/", tar::EntryType::Directory, 1_000_000_000);
    add(&mut b, "d/f", tar::EntryType::Regular, 1_100_000_000);
    add(&mut b, "d/s", tar::EntryType::Symlink, 1_200_000_000);
    b.append_pax_extensions([("mtime", &b"1300000000.25"[..])]).unwrap();
    add(&mut b, "d/p", tar::EntryType::Regular, 7);
    b.append_pax_extensions([("mtime", &b"-1.25"[..])]).unwrap();
    add(&mut b, "d/old", tar::EntryType::Regular, 7);
    let layer = dir.path().join("l.tar");
    std::fs::write(&layer, b.into_inner().unwrap()).unwrap();
    let target = dir.path().join("applied");
    let r = ovlc(&["layer", "apply", layer.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let t = |p: &str| {
        let m = std::fs::symlink_metadata(target.join(p)).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    assert_eq!(t("d"), (1_000_000_000, 0), "the directory, after its entries were made");
    assert_eq!(t("d/f"), (1_100_000_000, 0));
    assert_eq!(t("d/s"), (1_200_000_000, 0), "the symlink itself");
    assert_eq!(t("d/p"), (1_300_000_000, 250_000_000), "a PAX record wins over the header");
    assert_eq!(t("d/old"), (-2, 750_000_000), "1.25 s before the epoch");
}
