//! Hostile scenarios on the three host targets, checked against the host:
//! a scenario from a stranger runs as root, and may not touch anything
//! outside its instance. Needs root, as CI runs it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// `ovlc run` on the three host targets, `-j 4`, a 3 s instance limit and
/// `TMPDIR` set to `tmp`: the exit code and the JSON report.
fn run(dir: &Path, tmp: &Path) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--snapshots", "ignore", "--target", "host,host-rootless,host-fuse"])
        .args(["-j", "4"])
        .arg(dir)
        .env("OVLC_INSTANCE_TIMEOUT", "3")
        .env("TMPDIR", tmp)
        .current_dir(repo())
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), doc)
}

/// Nothing of a run is left under `tmp`: no directory, no mount in any
/// process's namespace, no process.
fn nothing_left(tmp: &Path) {
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "the run's directory was left behind");
    let what = tmp.display().to_string();
    assert_eq!(mounts_naming(&what), Vec::<String>::new(), "mounts left behind");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.lines().any(|l| l.contains(&what)), "processes left behind:\n{ps}");
}

/// A loop device over a file of zeros, detached on drop.
struct Loop {
    dev: String,
    file: tempfile::NamedTempFile,
}

impl Loop {
    fn new() -> Loop {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(1 << 20).unwrap();
        let out = Command::new("losetup").args(["-f", "--show"]).arg(file.path()).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Loop { dev: String::from_utf8(out.stdout).unwrap().trim().to_string(), file }
    }

    fn numbers(&self) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        (libc::major(rdev), libc::minor(rdev))
    }

    fn untouched(&self) -> bool {
        std::fs::read(self.file.path()).unwrap().iter().all(|&b| b == 0)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A device node in a layer, made by `mknod`, or from a layer tarball can be
/// created, copied up and whited out on host targets, but never opened: the
/// instance's backing and overlay are `nodev`. The host's loop device keeps
/// its zeros.
#[test]
fn host_devices_cannot_be_opened_from_a_scenario() {
    let lo = Loop::new();
    let (maj, min) = lo.numbers();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("layer.ovl"),
        format!(
            "scenario \"a device in a layer\"\nlayer base {{\n    device /disk block {maj}:{min}\n}}\nmount base\n\
             write /disk \"x\" => EACCES\nread /disk => EACCES\n\
             # fuse-overlayfs opens a lower device to copy it up or remove it: the nodev backing refuses.\n\
             if driver == fuse {{\n    chmod /disk 0666 => EACCES\n    unlink /disk => EACCES\n}} else {{\n    \
             chmod /disk 0666\n    write /disk \"x\" => EACCES\n    \
             expect upper {{\n        device /disk block {maj}:{min}\n    }}\n    \
             unlink /disk\n    expect upper {{\n        whiteout /disk\n    }}\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("mknod.ovl"),
        format!(
            "scenario \"mknod of a host device\"\nlayer base {{\n    file /f \"x\"\n}}\nmount base\n\
             if driver == rootless {{\n    mknod /disk block {maj}:{min} => EPERM\n}} else {{\n    \
             mknod /disk block {maj}:{min}\n    write /disk \"x\" => EACCES\n    read /disk => EACCES\n}}\n"
        ),
    )
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Block);
    h.set_mode(0o666);
    h.set_size(0);
    h.set_device_major(maj).unwrap();
    h.set_device_minor(min).unwrap();
    b.append_data(&mut h, "disk", std::io::empty()).unwrap();
    std::fs::write(p.join("dev.tar"), b.into_inner().unwrap()).unwrap();
    std::fs::write(
        p.join("tarball.ovl"),
        "scenario \"a device from a layer tarball\"\nlayer base from \"dev.tar\"\nmount base\n\
         write /disk \"x\" => EACCES\nread /disk => EACCES\n",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (_, doc) = run(p, tmp.path());
    nothing_left(tmp.path());
    for r in doc["results"].as_array().unwrap() {
        let (id, target) = (r["id"].as_str().unwrap(), r["target"].as_str().unwrap());
        // The rootless agent may not make device nodes: a skip with the reason.
        if target == "host-rootless" && id != "mknod" {
            assert_eq!(r["status"], "skip", "{r:#}");
            assert!(r["reason"].as_str().unwrap().contains("EPERM"), "{r:#}");
        } else {
            assert_eq!(r["status"], "pass", "{id} on {target}: {r:#}");
        }
    }
    assert_eq!(doc["results"].as_array().unwrap().len(), 9);
    assert!(lo.untouched(), "a scenario wrote into the host's {}", lo.dev);
}

/// Resources are bounded: a `read` of a FIFO without a writer ends as
/// `timeout` after the instance's limit (the run goes on, nothing is left
/// behind), and a 900 GiB sparse file is hashed without reading its holes.
#[test]
fn a_hanging_instance_times_out_and_a_huge_sparse_file_is_cheap() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("fifo.ovl"), "scenario \"fifo\"\nlayer l {\n    fifo /p\n}\nmount l\nread /p => \"never\"\n")
        .unwrap();
    std::fs::write(
        p.join("sparse.ovl"),
        "scenario \"sparse\"\nlayer l {\n    file /f \"x\"\n}\nmount l\ntruncate /f 900GiB\n\
         expect upper {\n    file /f size 900GiB\n}\n",
    )
    .unwrap();
    std::fs::write(
        p.join("fine.ovl"),
        "scenario \"fine\"\nlayer l {\n    file /f \"x\"\n}\nmount l\nread /f => \"x\"\n",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (code, doc) = run(p, tmp.path());
    let took = started.elapsed();
    assert_eq!(code, Some(1));
    for r in doc["results"].as_array().unwrap() {
        let (id, target) = (r["id"].as_str().unwrap(), r["target"].as_str().unwrap());
        let want = if id == "fifo" { "timeout" } else { "pass" };
        assert_eq!(r["status"], want, "{id} on {target}: {r:#}");
        if id == "fifo" {
            let reason = r["reason"].as_str().unwrap();
            assert!(reason.contains("did not finish within 3 s"), "{reason}");
        }
        if id == "sparse" {
            assert!(r["upper"].as_str().unwrap().contains("/f file 0644 0:0 size=966367641600 data-sha256="), "{r:#}");
        }
    }
    // Three hanging instances in parallel: a few limits, not minutes.
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    nothing_left(tmp.path());
}

/// Output is bounded: a failed `read` of a 64 MiB file shows the value cut,
/// with its size and hash, in the human output and in JSON alike; a read
/// stops at 16 MiB.
#[test]
fn a_huge_value_is_shown_cut_with_its_size_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("big.ovl"),
        "scenario \"big\"\nlayer l {\n    file /big size 64MiB\n    file /mid size 300\n}\nmount l\n\
         read /big => \"x\"\nread /mid => \"y\"\n",
    )
    .unwrap();
    let run = |format: &str| {
        Command::new(env!("CARGO_BIN_EXE_ovlc"))
            .args(["run", "--format", format, "--snapshots", "ignore", "--target", "host"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let human = run("human");
    assert_eq!(human.status.code(), Some(1));
    assert!(human.stdout.len() < 20_000, "{} bytes of output", human.stdout.len());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("... (more than 16777216 bytes: the read stopped there)"), "{text}");
    assert!(text.contains("... (300 bytes, sha256 "), "{text}");
    let json = run("json");
    assert!(json.stdout.len() < 50_000, "{} bytes of JSON", json.stdout.len());
}

/// Every mount of every process on the machine that names a path of ours.
fn mounts_naming(what: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let info = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
        found.extend(info.lines().filter(|l| l.contains(what)).map(|l| format!("{}: {l}", e.path().display())));
    }
    found
}

/// The hostile scenarios together on the three host targets, then the host
/// checked: the loop device, a file outside the run that symlinks and hard
/// links aim at, mounts in every namespace, processes, temporary directories.
#[test]
fn hostile_scenarios_leave_the_host_as_it_was() {
    let lo = Loop::new();
    let (maj, min) = lo.numbers();
    let outside = tempfile::tempdir().unwrap();
    let canary = outside.path().join("canary");
    std::fs::write(&canary, "untouched").unwrap();
    let c = canary.display();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let files = [
        (
            "escape",
            format!(
                "scenario \"escape\"\nlayer l {{\n    symlink /abs -> \"{c}\"\n    symlink /up -> \"../../../../../../..{c}\"\n    \
                 file /f \"x\"\n}}\nmount l\nread /abs => ENOENT\nwrite /abs \"pwned\" => ENOENT\n\
                 write /up \"pwned\" => ENOENT\nsymlink /new -> \"{c}\"\nwrite /new \"pwned\" => ENOENT\n\
                 link /abs /hard\nwrite /hard \"pwned\" => ENOENT\nrename /f /abs\nread /abs => \"x\"\n"
            ),
        ),
        (
            "device",
            format!(
                "scenario \"device\"\nlayer l {{\n    file /f \"x\"\n}}\nmount l\n\
                 if driver != rootless {{\n    mknod /d block {maj}:{min}\n    write /d \"pwned\" => EACCES\n}}\n"
            ),
        ),
        ("fifo", "scenario \"fifo\"\nlayer l {\n    fifo /p\n}\nmount l\nread /p\n".to_string()),
        ("fine", "scenario \"fine\"\nlayer l {\n    file /f \"x\"\n}\nmount l\nread /f => \"x\"\n".to_string()),
    ];
    for (name, text) in &files {
        std::fs::write(p.join(format!("{name}.ovl")), text).unwrap();
    }
    // A layer tarball forging a redirect to the host's /etc: refused, naming the member.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..])]).unwrap();
    b.append_data(&mut h, "d", std::io::empty()).unwrap();
    std::fs::write(p.join("forged.tar"), b.into_inner().unwrap()).unwrap();
    std::fs::write(p.join("forged.ovl"), "scenario \"forged\"\nlayer l from \"forged.tar\"\nmount l\nreaddir /d\n")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (_, doc) = run(p, tmp.path());
    for r in doc["results"].as_array().unwrap() {
        let (id, target) = (r["id"].as_str().unwrap(), r["target"].as_str().unwrap());
        let want = match id {
            "fifo" => "timeout",
            "forged" => "error",
            _ => "pass",
        };
        assert_eq!(r["status"], want, "{id} on {target}: {r:#}");
        if id == "forged" {
            let reason = r["reason"].as_str().unwrap();
            assert!(reason.contains("trusted.overlay.redirect") && reason.contains('d'), "{reason}");
        }
    }
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "untouched", "a scenario wrote outside its instance");
    assert!(lo.untouched(), "a scenario wrote into the host's {}", lo.dev);
    nothing_left(tmp.path());
}

#[test]
fn an_edit_never_follows_a_layer_symlink_out_of_the_layer() {
    let (victim, target) = victim();
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Each statement alone: a write, a removal, an xattr, a hard link, all
    // through the layer's symlink to a host directory, in a layer and in the upper.
    let attacks = [
        ("write", "edit layer l {\n    file /s/planted \"x\"\n}"),
        ("remove", "edit layer l {\n    remove /s/keep\n}"),
        ("xattr", "edit layer l {\n    xattr /s/keep user.x=\"y\"\n}"),
        ("link", "edit layer l {\n    hardlink /grab -> /s/keep\n}"),
        ("upper", "write /u \"u\"\nsymlink /us -> \"TARGET\"\nedit upper {\n    file /us/planted \"x\"\n}"),
    ];
    for (name, body) in attacks {
        let text = format!(
            "scenario \"{name}\"\nlayer l {{\n    symlink /s -> \"{target}\"\n}}\nmount l\n{}\n",
            body.replace("TARGET", &target)
        );
        std::fs::write(dir.path().join(format!("{name}.ovl")), text).unwrap();
    }
    let (code, doc) = run(dir.path(), tmp.path());
    assert_eq!(code, Some(3), "every instance is an error of the run: {doc}");
    for o in doc["results"].as_array().unwrap() {
        let reason = o["reason"].as_str().unwrap_or_default();
        assert_eq!(o["status"], "error", "{o}");
        assert!(reason.contains("a parent is a symlink"), "{reason}");
    }
    victim_untouched(victim.path());
    assert!(xattr_absent(&victim.path().join("keep")));
    nothing_left(tmp.path());
}

/// A host directory for a scenario to aim at: one file `keep`, and its path.
fn victim() -> (tempfile::TempDir, String) {
    let victim = tempfile::tempdir().unwrap();
    std::fs::write(victim.path().join("keep"), "host file").unwrap();
    let target = victim.path().display().to_string();
    (victim, target)
}

/// The victim directory as `victim` made it.
fn victim_untouched(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("keep")], "the host directory changed");
    assert_eq!(std::fs::read_to_string(dir.join("keep")).unwrap(), "host file");
}

/// No `user.x` xattr on `p` (listxattr).
fn xattr_absent(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    !buf[..n as usize].split(|&b| b == 0).any(|name| name == b"user.x")
}

#[test]
fn a_layer_or_mount_path_never_leads_a_mount_out_of_the_instance() {
    let (victim, target) = victim();
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // A symlink to a host directory, in a layer and in a mounted overlay,
    // named as an upper (which the kernel would write into) and as a lower:
    // the directory is opened inside the layer or the overlay, so the
    // symlink resolves there (to nothing), never to the host's directory.
    let attacks = [
        ("layer-upper", "mount l upper l2:/s work l2:/w => error"),
        ("mount-upper", "mount l as m\nmount l upper m:/s work m:/w as n => error"),
        ("layer-lower", "mount l:/s, l readonly => error"),
        ("mount-lower", "mount l as m\nmount m:/s, l readonly as n => error"),
    ];
    for (name, body) in attacks {
        let text = format!(
            "scenario \"{name}\"\nlayer l {{\n    symlink /s -> \"{target}\"\n    dir /w\n}}\nlayer l2 {{\n    symlink /s -> \"{target}\"\n    dir /w\n}}\n{body}\n"
        );
        std::fs::write(dir.path().join(format!("{name}.ovl")), text).unwrap();
    }
    let (_, doc) = run(dir.path(), tmp.path());
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 12, "four scenarios on three targets");
    for o in results {
        // Resolved inside, the symlink leads nowhere: the run cannot go on
        // (an error), where following it to the host would have mounted.
        let reason = o["reason"].as_str().unwrap_or_default();
        assert_eq!(o["status"], "error", "{o}");
        assert!(reason.contains("cannot open") && reason.contains(":/s"), "{reason}");
    }
    victim_untouched(victim.path());
    nothing_left(tmp.path());
}

#[test]
fn options_and_names_cannot_reach_a_host_directory() {
    // Each is refused before anything runs: a raw option string with a path
    // or an escape, an option naming a directory, a path in an option value
    // (a `vary` too), an upper or work name that would be spliced into the
    // option string.
    let attacks = [
        (
            "raw-path",
            "mount l options \"upperdir=/tmp,workdir=../w\"",
            "`options` names directories by layer names only",
        ),
        (
            "raw-escape",
            "mount l driver fuse options \"upperdir=\\\\057tmp\"",
            "`options` names directories by layer names only",
        ),
        ("with-upperdir", "mount l with upperdir=/tmp/x, workdir=/tmp/y", "option `upperdir` names a directory"),
        ("with-path", "mount l with redirect_dir=/tmp", "has a value with `/`"),
        ("upper-name", "mount l upper \"a,upperdir=up,workdir=wk\" via legacy", "is no identifier"),
        ("work-name", "mount l upper u work \"w,workdir=x\"", "is no identifier"),
    ];
    for (name, body, says) in attacks {
        let dir = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let text = format!("scenario \"{name}\"\nlayer l {{\n    file /f\n}}\n{body}\n");
        std::fs::write(dir.path().join(format!("{name}.ovl")), &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
            .args(["run", "--snapshots", "ignore", "--target", "host,host-fuse"])
            .arg(dir.path())
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: refused as bad input\n{text}\n{err}");
        assert!(err.contains(says), "{name}: {err}");
        nothing_left(tmp.path());
    }
    let vary = "scenario \"v\"\nvary upperdir=/a|/b\nlayer l {\n    file /f\n}\nmount l\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("v.ovl"), vary).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc")).args(["check"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a varied directory option is refused");
}
