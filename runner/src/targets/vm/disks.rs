//! Disks for VM instances on ext4, xfs or btrfs: made with the mkfs of this
//! machine, with the features the guest's kernel knows (see [`crate::sys::mkfs`]).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Creates and formats a 1 GiB sparse scratch disk image for `backing` in `dir`.
pub(crate) fn make_disk(dir: &Path, backing: dsl::ast::Backing, release: &str) -> Result<PathBuf> {
    let image = dir.join(format!("{}.img", backing.name()));
    if backing == dsl::ast::Backing::Tmpfs {
        return Ok(image);
    }
    crate::sys::mkfs::make_disk(&image, backing.name(), 1 << 30, release)
        .map_err(|e| Error::Infrastructure(format!("the {} scratch disk (made on the host): {e}", backing.name())))?;
    Ok(image)
}
