//! OCI image layers (image-spec `layer.md`): exporting an overlay upper
//! directory as a layer tarball (`export`), applying a layer tarball to a
//! directory in overlay form (`apply`, reading through `stream` and
//! `sparse`), the one classifier of members (`member`), and the round trip
//! of an instance's upper (`roundtrip`).

pub use crate::error::OciError;

mod apply;
mod export;
pub mod member;
mod roundtrip;
mod sparse;
mod spec;
mod stream;

pub use apply::{apply_into, apply_to, ApplyOptions, ApplyReport};
pub use export::{export, export_to, ExportOptions, ExportReport};
pub use roundtrip::roundtrip;
pub use stream::open_layer;
