//! The engine's errors, and the one place an error becomes an exit code.
//!
//! Exit codes (see the README): 0 all passed, 1 a scenario failed (or a check
//! found a difference), 2 bad input or usage, 3 the infrastructure failed
//! (a download, QEMU, a boot, the system).

use std::path::{Path, PathBuf};

pub const EXIT_PASS: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_INFRA: u8 = 3;

/// `git bisect run`'s word for "this commit cannot be tested": skip it.
pub const BISECT_SKIP: u8 = 125;
/// `git bisect run` stops at any code above 127: bad usage stops a bisection
/// instead of marking every commit bad.
pub const BISECT_ABORT: u8 = 128;

/// An exit code as `git bisect run` reads it (`ovlc run --bisect`): passed
/// is good (0), a failure, kernel panic or hang is bad (1), a machine that
/// could not be tested (no boot, a download, QEMU, any instance that could
/// not run) is skipped (125), and bad input stops the bisection (128).
pub fn bisect_exit_code(code: u8) -> u8 {
    match code {
        EXIT_PASS => EXIT_PASS,
        EXIT_FAIL => EXIT_FAIL,
        EXIT_INFRA => BISECT_SKIP,
        _ => BISECT_ABORT,
    }
}

/// Whose fault an error is: the user's input, or the machinery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad argument, scenario, report or layer: exit 2.
    BadInput,
    /// The system, a download, QEMU or a boot failed: exit 3.
    Infrastructure,
}

impl ErrorKind {
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::BadInput => EXIT_BAD_INPUT,
            ErrorKind::Infrastructure => EXIT_INFRA,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad command line: an unknown target, conflicting options.
    #[error("{0}")]
    Usage(String),
    /// A bad input file (a report, a scenario path, a benchmark's results).
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    /// A bad input file, at a place in it.
    #[error("{}:{line}:{column}: {message}", path.display())]
    At { path: PathBuf, line: usize, column: usize, message: String },
    /// What must run as root was run by another user.
    #[error("{0}: run it as root")]
    NotRoot(&'static str),
    /// The system refused: a file, a directory, a mount, a thread pool.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A layer tarball was refused (bad input) or could not be read or written.
    #[error(transparent)]
    Layer(#[from] OciError),
    /// The kernel catalog, a download, an extraction.
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    /// A system call failed.
    #[error("{what}: {errno}")]
    Sys { what: String, errno: nix::errno::Errno },
    /// Machinery that failed in its own words (a VM that did not boot, a
    /// rootless agent that died).
    #[error("{0}")]
    Infrastructure(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) | Error::Input { .. } | Error::At { .. } | Error::Layer(OciError::Refused(_)) => {
                ErrorKind::BadInput
            }
            Error::NotRoot(_)
            | Error::Io { .. }
            | Error::Sys { .. }
            | Error::Layer(OciError::Io { .. })
            | Error::Vm(_)
            | Error::Infrastructure(_) => ErrorKind::Infrastructure,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }

    /// An I/O error about a path.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io { what: path.display().to_string(), source }
    }

    /// An I/O error: what was being done.
    pub fn doing(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// A failed system call: what was being done.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> Error {
        let what = what.into();
        move |errno| Error::Sys { what, errno }
    }

    /// A bad input file.
    pub fn input(path: &Path, message: impl std::fmt::Display) -> Error {
        Error::Input { path: path.to_path_buf(), message: message.to_string() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem with a layer (`crate::oci`): refused as bad input, or the
/// system failed reading or writing it.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisect_codes_are_what_git_bisect_run_reads() {
        assert_eq!(bisect_exit_code(EXIT_PASS), 0);
        assert_eq!(bisect_exit_code(EXIT_FAIL), 1);
        assert_eq!(bisect_exit_code(EXIT_INFRA), 125);
        assert_eq!(bisect_exit_code(EXIT_BAD_INPUT), 128);
    }

    #[test]
    fn exit_codes_follow_whose_fault_it_is() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(Error::Usage("unknown target x".into()).exit_code(), 2);
        assert_eq!(Error::input(Path::new("r.json"), "not a report").exit_code(), 2);
        assert_eq!(Error::Layer(OciError::Refused("member x is a 0/0 device".into())).exit_code(), 2);
        assert_eq!(Error::Layer(OciError::Io { what: "writing".into(), source: io() }).exit_code(), 3);
        assert_eq!(Error::NotRoot("ovlc run mounts file systems").exit_code(), 3);
        assert_eq!(Error::io(Path::new("/x"))(io()).exit_code(), 3);
        assert_eq!(Error::Infrastructure("QEMU did not start".into()).exit_code(), 3);
    }

    #[test]
    fn messages_say_where() {
        assert_eq!(Error::input(Path::new("a/r.json"), "1:2: not a report").to_string(), "a/r.json: 1:2: not a report");
        assert_eq!(
            Error::NotRoot("ovlc bench mounts file systems").to_string(),
            "ovlc bench mounts file systems: run it as root"
        );
        let e = Error::io(Path::new("/tmp/x"))(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(e.to_string().starts_with("/tmp/x: "), "{e}");
    }
}
