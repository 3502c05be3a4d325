//! The image spec's names and the overlay's: the whiteout prefix and the
//! opaque marker, the PAX xattr records, the xattrs that are overlay metadata
//! in any dialect; how names from a layer are shown in messages, and how an
//! I/O or tree error becomes a layer error.

use crate::error::OciError;

/// A directory that cannot be read whole is not something to export.
impl From<crate::tree::TreeError> for OciError {
    fn from(e: crate::tree::TreeError) -> OciError {
        OciError::Refused(e.to_string())
    }
}

pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OciError {
    let what = what.into();
    move |source| OciError::Io { what, source }
}

pub use crate::tree::{OPAQUE, WHITEOUT};

/// The PAX record prefix of an xattr (`SCHILY.xattr.NAME`).
pub(super) const PAX_XATTR: &[u8] = b"SCHILY.xattr.";

/// Overlay metadata of every dialect: the kernel's (`trusted.overlay.*`, and
/// `user.overlay.*` with `userxattr`) and fuse-overlayfs' (`user.fuseoverlayfs.*`,
/// and the stat overrides it honours: `security.fuseoverlayfs.override_stat`,
/// `user.containers.override_stat`, with `user.containers.override_*` also its
/// encoding of the other names). An export strips these; an apply refuses them.
/// (fuse-overlayfs has no `trusted.fuseoverlayfs.*`.)
pub const OVERLAY_XATTR_PREFIXES: &[&str] = &[
    "trusted.overlay.",
    "user.overlay.",
    "user.fuseoverlayfs.",
    "security.fuseoverlayfs.",
    "user.containers.override_",
];

pub(super) fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
}

/// A name or path from a layer or a directory, for a message: control
/// characters and bytes that are not UTF-8 escaped, never echoed raw.
pub(super) fn show(b: &[u8]) -> String {
    dsl::text::escape(b)
}
