//! Programs ovlc runs beside the kernel: finding them on PATH, and whether
//! fuse-overlayfs can run here (its binary and /dev/fuse), asked in one place
//! by the default targets, the host-fuse target, the benchmark and the VM
//! initramfs.

use std::path::{Path, PathBuf};

/// The fuse-overlayfs program's name, found on PATH unless a path is given.
pub const FUSE_OVERLAYFS: &str = "fuse-overlayfs";

/// The full path of a program, searched on PATH.
pub fn which(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(p)).find(|c| c.is_file())
}

/// The fuse-overlayfs to run: the one given, else the one on PATH.
pub fn fuse_binary(given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| PathBuf::from(FUSE_OVERLAYFS), Path::to_path_buf)
}

/// Why fuse-overlayfs cannot run here, or `None` when it can.
pub fn fuse_unavailable(given: Option<&Path>) -> Option<String> {
    let bin = fuse_binary(given);
    if which(&bin).is_none() {
        return Some(format!(
            "{} is not installed: install Debian's fuse-overlayfs package (apt-get install -y fuse-overlayfs)",
            bin.display()
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing: load the fuse module (modprobe fuse)".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_programs_and_takes_paths_as_they_are() {
        assert!(which(Path::new("sh")).is_some_and(|p| p.is_absolute()), "sh is on every PATH");
        assert_eq!(which(Path::new("ovlc-no-such-program")), None);
        assert_eq!(which(Path::new("/bin/sh")), Some(PathBuf::from("/bin/sh")));
        assert_eq!(which(Path::new("/nonexistent/sh")), None);
    }

    #[test]
    fn a_missing_fuse_overlayfs_says_how_to_install_it() {
        let why = fuse_unavailable(Some(Path::new("/nonexistent/fuse-overlayfs")));
        assert!(why.is_some_and(|w| w.contains("apt-get install -y fuse-overlayfs")));
        assert_eq!(fuse_binary(None), PathBuf::from("fuse-overlayfs"));
    }
}
