//! Making filesystems on image files with this machine's tools: disk
//! filesystems (ext4, xfs, btrfs) formatted with the features the running
//! or guest kernel knows, and read-only images (squashfs, erofs) packed from
//! a directory. The VMs' scratch disks and `filesystem NAME KIND` both use it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where xfsprogs keeps its per-kernel feature sets (`lts_X.Y.conf`).
pub const XFS_LTS_DIR: &str = "/usr/share/xfsprogs/mkfs";

/// `major.minor` of a kernel release (`6.1.0-50-cloud-amd64` → (6, 1)).
fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// An ext4 feature set every default kernel mounts read-write, whatever the
/// host's e2fsprogs would choose (newer ones add features 5.10 lacks), with
/// fs-verity (from 5.4) so that layers on it can hold verity files.
const MKE2FS_CONF: &str = "[defaults]\n\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n\
    \tdefault_mntopts = acl,user_xattr\n\tblocksize = 4096\n\tinode_size = 256\n\tinode_ratio = 16384\n\
    [fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize,verity\n\t}\n";

/// The program that makes `kind` and the Debian package that has it.
pub fn program(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "ext4" => ("mkfs.ext4", "e2fsprogs"),
        "xfs" => ("mkfs.xfs", "xfsprogs"),
        "btrfs" => ("mkfs.btrfs", "btrfs-progs"),
        "squashfs" => ("mksquashfs", "squashfs-tools"),
        "erofs" => ("mkfs.erofs", "erofs-utils"),
        _ => return None,
    })
}

/// The mkfs command for a disk image of `kind` (ext4, xfs, btrfs) that
/// `release` can mount. xfs takes the newest of xfsprogs' `lts_X.Y.conf`
/// feature sets not newer than the kernel.
pub fn command(kind: &str, image: &Path, release: &str, lts_dir: &Path) -> Option<Command> {
    let mut c;
    match kind {
        "ext4" => {
            c = Command::new("mkfs.ext4");
            c.args(["-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=1,lazy_journal_init=1"]);
        }
        "xfs" => {
            c = Command::new("mkfs.xfs");
            c.args(["-q", "-f"]);
            if let Some(conf) = xfs_features(release, lts_dir) {
                c.arg("-c").arg(format!("options={}", conf.display()));
            }
        }
        "btrfs" => {
            c = Command::new("mkfs.btrfs");
            c.args(["-q", "-f"]);
        }
        _ => return None,
    }
    c.arg(image);
    Some(c)
}

/// The newest xfs feature set in `lts_dir` not newer than `release`.
pub fn xfs_features(release: &str, lts_dir: &Path) -> Option<PathBuf> {
    let kernel = release_version(release)?;
    let mut best: Option<((u32, u32), PathBuf)> = None;
    for e in std::fs::read_dir(lts_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(v) = name.strip_prefix("lts_").and_then(|n| n.strip_suffix(".conf")) else { continue };
        let Some(v) = release_version(v) else { continue };
        if v <= kernel && best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, e.path()));
        }
    }
    best.map(|(_, p)| p)
}

/// Where `program` is, or why not (with the package to install).
fn find(kind: &str) -> Result<PathBuf, String> {
    let (program, package) = program(kind).ok_or_else(|| format!("no mkfs for {kind}"))?;
    super::programs::which(Path::new(program)).ok_or_else(|| {
        format!("{program} is not installed (it makes {kind} filesystems): apt-get install -y {package}")
    })
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
}

/// Creates a sparse image of `size` bytes and formats it as `kind` (ext4,
/// xfs, btrfs) for kernel `release`; scratch files go beside the image.
pub fn make_disk(image: &Path, kind: &str, size: u64, release: &str) -> Result<(), String> {
    let f = std::fs::File::create(image).map_err(|e| format!("create {}: {e}", image.display()))?;
    f.set_len(size).map_err(|e| format!("size {}: {e}", image.display()))?;
    drop(f);
    format(image, kind, release, image.parent().unwrap_or(Path::new("/tmp")))
}

/// Formats `image` (a file of its final size, or a path that opens one,
/// such as `/proc/PID/fd/N`) as `kind` for kernel `release`; mkfs'
/// configuration goes to `scratch`.
pub fn format(image: &Path, kind: &str, release: &str, scratch: &Path) -> Result<(), String> {
    let program = find(kind)?;
    let Some(mut cmd) = command(kind, image, release, Path::new(XFS_LTS_DIR)) else {
        return Err(format!("{kind} is no disk filesystem"));
    };
    cmd.env("PATH", format!("{}:/usr/sbin:/sbin:/usr/bin:/bin", program.parent().unwrap_or(Path::new("/")).display()));
    let conf = scratch.join(format!("mke2fs-{kind}.conf"));
    std::fs::write(&conf, MKE2FS_CONF).map_err(|e| format!("write {}: {e}", conf.display()))?;
    cmd.env("MKE2FS_CONFIG", &conf);
    let what = program.display().to_string();
    let first = run(cmd, &what);
    if first.is_err() && kind == "xfs" {
        // Some xfsprogs ship feature files their own mkfs rejects (bookworm's
        // lts_*.conf name nrext64, which its mkfs.xfs 6.1 does not know, and
        // leaves off): its defaults then suit every default kernel.
        let mut plain = Command::new(&program);
        plain.args(["-q", "-f"]).arg(image);
        return run(plain, &what);
    }
    first
}

/// Packs directory `from` into a read-only `kind` image (squashfs, erofs),
/// keeping owners, modes, device nodes and extended attributes.
pub fn pack(kind: &str, from: &Path, image: &Path) -> Result<(), String> {
    let program = find(kind)?;
    let mut cmd = Command::new(&program);
    match kind {
        "squashfs" => {
            cmd.arg(from).arg(image).args(["-noappend", "-quiet", "-no-progress", "-xattrs"]);
        }
        "erofs" => {
            cmd.arg("--quiet").arg(image).arg(from);
        }
        _ => return Err(format!("{kind} is no image filesystem")),
    }
    run(cmd, &program.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfs_takes_the_newest_feature_set_the_kernel_knows() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["4.19", "5.10", "5.15", "6.1", "6.6"] {
            std::fs::write(dir.path().join(format!("lts_{v}.conf")), "").unwrap();
        }
        let conf = |release: &str| {
            let c = command("xfs", Path::new("/i.img"), release, dir.path()).unwrap();
            c.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
        };
        assert!(conf("5.10.0-32-cloud-amd64").contains("lts_5.10.conf"));
        assert!(conf("6.1.0-50-cloud-amd64").contains("lts_6.1.conf"));
        assert!(conf("6.12.117+deb13-cloud-amd64").contains("lts_6.6.conf"));
        assert!(conf("7.3-cloud-amd64").contains("lts_6.6.conf"));
        assert_eq!(conf("custom"), "-q -f /i.img");
        let ext4 = command("ext4", Path::new("/i.img"), "5.10", dir.path()).unwrap();
        assert_eq!(ext4.get_program(), "mkfs.ext4");
        assert!(command("tmpfs", Path::new("/i.img"), "5.10", dir.path()).is_none());
        assert!(MKE2FS_CONF.contains("verity"), "ext4 layers may hold fs-verity files");
    }

    #[test]
    fn every_kind_names_its_program_and_package() {
        for k in dsl::ast::FsKind::ALL {
            let have = program(k.name());
            assert_eq!(have.is_none(), k == dsl::ast::FsKind::Tmpfs, "{}", k.name());
        }
    }
}
