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

fn run(dir: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(["run", "--format", "json", "--snapshots", "ignore", "--target", "host,host-rootless,host-fuse"])
        .arg(dir)
        .current_dir(repo())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
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
    let doc = run(p);
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
