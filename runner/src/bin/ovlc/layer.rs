//! `ovlc layer`: export an overlay upper directory as an OCI layer, apply a
//! layer tarball to a new directory in overlay form.

use std::path::PathBuf;

use clap::Subcommand;
use runner::error::{Error, Result, EXIT_PASS};
use runner::oci;

#[derive(Subcommand, Debug)]
pub enum LayerCmd {
    /// Write an overlay upper directory as an OCI layer tar (.tar, .tar.gz, .tar.zst, or - for stdout).
    Export {
        /// The upper directory (any overlay xattr dialect).
        upper: PathBuf,
        /// A lower layer, uppermost first (repeatable): whiteouts and opaque markers are
        /// written only for paths that exist in one.
        #[arg(long = "lower")]
        lowers: Vec<PathBuf>,
        /// The layer file; its extension picks the compression.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Clamp mtimes to at most this many seconds since the epoch (reproducible layers).
        #[arg(long)]
        mtime_clamp: Option<u64>,
        /// Diff this merged view against the lowers instead of reading the upper's
        /// overlay metadata (needed for uppers with redirects or metacopy files).
        #[arg(long, value_name = "MERGED_DIR")]
        naive_diff: Option<PathBuf>,
    },
    /// Unpack an OCI layer tar into a new directory, in overlay form.
    Apply {
        /// The layer file (.tar, gzip or zstd, recognised by content).
        file: PathBuf,
        /// The directory to create (it must not exist, or be empty).
        dir: PathBuf,
        /// Mark opaque directories with user.overlay.opaque (for rootless overlays).
        #[arg(long)]
        userxattr: bool,
        /// Refuse layers whose files add up to more than this many bytes.
        #[arg(long, default_value_t = 8 << 30)]
        max_bytes: u64,
        /// Keep file capabilities (security.capability xattrs); a layer holding one is refused otherwise.
        #[arg(long)]
        allow_capabilities: bool,
    },
}

pub fn layer(cmd: LayerCmd) -> Result<u8> {
    runner::sys::cleanup::on_interrupt_clean_up();
    match cmd {
        LayerCmd::Export { upper, lowers, output, mtime_clamp, naive_diff } => {
            if !upper.is_dir() {
                return Err(Error::Usage(format!("{} is not a directory", upper.display())));
            }
            let opts = oci::ExportOptions { lowers, mtime_clamp, naive_diff };
            let r = oci::export_to(&upper, &opts, &output)?;
            for n in &r.notes {
                eprintln!("note: {n}");
            }
            eprintln!("{} members, {} bytes of file data", r.members.len(), r.bytes);
        }
        LayerCmd::Apply { file, dir, userxattr, max_bytes, allow_capabilities } => {
            let opaque_xattr =
                if userxattr { runner::tree::OPAQUE_USER } else { runner::tree::OPAQUE_TRUSTED }.to_string();
            let r = oci::apply_to(&file, &dir, &oci::ApplyOptions { opaque_xattr, max_bytes, allow_capabilities })?;
            println!(
                "{} entries, {} whiteouts, {} opaque directories, {} bytes",
                r.entries, r.whiteouts, r.opaque_dirs, r.bytes
            );
        }
    }
    Ok(EXIT_PASS)
}
