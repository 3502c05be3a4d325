//! The machines ovlc boots: the kernel catalog and lock, Debian package fetch
//! with checksum verification and extraction, module closures, the initramfs,
//! the QEMU command line (pure), the serial console that boots and watches a
//! machine, and the signatures of kernel trouble. Knows nothing about
//! scenarios.

pub mod console;
pub mod debian;
pub mod initramfs;
pub mod kernel_log;
pub mod kernels;
pub mod manifest;
pub mod modules;
pub mod qemu;

/// What went wrong with a machine: which URL, file or package, and why.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("fetching {url}: {why}")]
    Fetch { url: String, why: String },
    #[error("{what}: SHA256 {got} is not the expected {expected} (the download was discarded)")]
    Checksum { what: String, expected: String, got: String },
    #[error("package index: {0}")]
    Index(String),
    #[error("package file: {0}")]
    Deb(String),
    #[error("kernel catalog: {0}")]
    Catalog(String),
    #[error("QEMU: {0}")]
    Qemu(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// A kernel the cache lacked, or held damaged, could not be fetched or
    /// extracted again.
    #[error("kernel {name}: {state}; getting it from its locked packages failed: {source}")]
    Kernel { name: String, state: String, source: Box<VmError> },
    /// The same before a run: says what to run.
    #[error("{source}. Run `ovlc kernels fetch {name}` to download and repair it")]
    RunFetch { name: String, source: Box<VmError> },
}
