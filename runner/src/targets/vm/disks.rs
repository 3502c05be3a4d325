//! Disks for VM instances on ext4, xfs or btrfs: made with the mkfs of this
//! machine, with the features the guest's kernel knows.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `major.minor` of a kernel release (`6.1.0-50-cloud-amd64` → (6, 1)).
fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// An ext4 feature set every default kernel mounts read-write, whatever the
/// host's e2fsprogs would choose (newer ones add features 5.10 lacks).
const MKE2FS_CONF: &str = "[defaults]\n\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n\
    \tdefault_mntopts = acl,user_xattr\n\tblocksize = 4096\n\tinode_size = 256\n\tinode_ratio = 16384\n\
    [fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize\n\t}\n";

/// The mkfs command for a scratch disk of `backing` that `release` can mount.
/// xfs takes the newest of xfsprogs' `lts_X.Y.conf` feature sets not newer
/// than the kernel.
pub fn mkfs_command(backing: dsl::ast::Backing, image: &Path, release: &str, lts_dir: &Path) -> Option<Command> {
    use dsl::ast::Backing as B;
    let mut c;
    match backing {
        B::Tmpfs => return None,
        B::Ext4 => {
            c = Command::new("mkfs.ext4");
            c.args(["-q", "-F", "-t", "ext4"]);
        }
        B::Xfs => {
            c = Command::new("mkfs.xfs");
            c.args(["-q", "-f"]);
            let kernel = release_version(release);
            let mut best: Option<((u32, u32), PathBuf)> = None;
            for e in std::fs::read_dir(lts_dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(v) = name.strip_prefix("lts_").and_then(|n| n.strip_suffix(".conf")) else { continue };
                let Some(v) = release_version(v) else { continue };
                if kernel.is_some_and(|k| v <= k) && best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, e.path()));
                }
            }
            if let Some((_, conf)) = best {
                c.arg("-c").arg(format!("options={}", conf.display()));
            }
        }
        B::Btrfs => {
            c = Command::new("mkfs.btrfs");
            c.args(["-q", "-f"]);
        }
    }
    c.arg(image);
    Some(c)
}

/// Creates and formats a 1 GiB sparse scratch disk image for `backing` in `dir`.
pub(crate) fn make_disk(dir: &Path, backing: dsl::ast::Backing, release: &str) -> Result<PathBuf> {
    let image = dir.join(format!("{}.img", backing.name()));
    let f = std::fs::File::create(&image).map_err(Error::io(&image))?;
    f.set_len(1 << 30).map_err(Error::io(&image))?;
    drop(f);
    let lts = Path::new("/usr/share/xfsprogs/mkfs");
    let Some(mut cmd) = mkfs_command(backing, &image, release, lts) else {
        return Ok(image);
    };
    let conf = dir.join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).map_err(Error::io(&conf))?;
    cmd.env("MKE2FS_CONFIG", &conf);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let package = match backing {
        dsl::ast::Backing::Ext4 => "e2fsprogs",
        dsl::ast::Backing::Xfs => "xfsprogs",
        _ => "btrfs-progs",
    };
    if crate::sys::programs::which(Path::new(&program)).is_none() {
        return Err(Error::Infrastructure(format!(
            "{program} is not installed (the {} scratch disk is made on the host): apt-get install -y {package}",
            backing.name()
        )));
    }
    let mut out = cmd.output().map_err(Error::doing(&program))?;
    if !out.status.success() && backing == dsl::ast::Backing::Xfs {
        // Some xfsprogs ship feature files their own mkfs rejects (bookworm's
        // lts_*.conf name nrext64, which its mkfs.xfs 6.1 does not know, and
        // leaves off): its defaults then suit every default kernel.
        out = Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&image).output().map_err(Error::doing(&program))?;
    }
    if !out.status.success() {
        return Err(Error::Infrastructure(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(image)
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
            let c = mkfs_command(dsl::ast::Backing::Xfs, Path::new("/i.img"), release, dir.path()).unwrap();
            c.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
        };
        assert!(conf("5.10.0-32-cloud-amd64").contains("lts_5.10.conf"));
        assert!(conf("6.1.0-50-cloud-amd64").contains("lts_6.1.conf"));
        assert!(conf("6.12.117+deb13-cloud-amd64").contains("lts_6.6.conf"));
        assert!(conf("7.3-cloud-amd64").contains("lts_6.6.conf"));
        assert_eq!(conf("custom"), "-q -f /i.img");
        let ext4 = mkfs_command(dsl::ast::Backing::Ext4, Path::new("/i.img"), "5.10", dir.path()).unwrap();
        assert_eq!(ext4.get_program(), "mkfs.ext4");
        assert!(mkfs_command(dsl::ast::Backing::Tmpfs, Path::new("/i.img"), "5.10", dir.path()).is_none());
    }
}
