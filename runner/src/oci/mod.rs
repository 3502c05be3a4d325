//! OCI image layers (image-spec `layer.md`): exporting an overlay upper
//! directory as a layer tarball, and applying a layer tarball to a directory
//! in overlay form (whiteouts as 0/0 character devices, opaque directories as
//! xattrs).

pub use crate::error::OciError;

mod apply;
mod export;
pub mod member;
mod roundtrip;
mod sparse;
mod spec;
mod stream;

pub use apply::{apply_into, apply_to, ApplyOptions, ApplyReport};
pub use export::{export, export_to, lower_union, ExportOptions, ExportReport};
pub use roundtrip::roundtrip;
pub use spec::{OPAQUE, OVERLAY_XATTR_PREFIXES, WHITEOUT};
pub use stream::open_layer;
