//! Finding scenario files under the paths a user names, and loading them.

use std::path::{Path, PathBuf};

use dsl::{Diag, ErrorKind, Failure, Scenario};

/// The extension of scenario files.
pub const EXT: &str = "ovl";

/// A path the user named that does not exist or cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct PathError {
    pub path: String,
    pub reason: String,
}

/// A scenario file and the directory whose name its id is relative to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Found {
    pub path: PathBuf,
    pub base: PathBuf,
}

/// Every `.ovl` file named or found (recursively) under `paths`, sorted, without repeats.
pub fn files(paths: &[PathBuf]) -> Result<Vec<Found>, PathError> {
    let mut out = Vec::new();
    for p in paths {
        let meta =
            std::fs::metadata(p).map_err(|e| PathError { path: p.display().to_string(), reason: e.to_string() })?;
        if meta.is_dir() {
            for entry in walkdir::WalkDir::new(p).sort_by_file_name() {
                let entry = entry.map_err(|e| PathError { path: p.display().to_string(), reason: e.to_string() })?;
                if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == EXT) {
                    out.push(Found { path: entry.into_path(), base: p.clone() });
                }
            }
        } else {
            out.push(Found { path: p.clone(), base: p.parent().map(Path::to_path_buf).unwrap_or_default() });
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|f| seen.insert(f.path.clone()));
    Ok(out)
}

/// One file's outcome: a valid scenario, or its errors, or an I/O problem.
#[derive(Debug)]
pub enum Loaded {
    Valid(Scenario),
    Invalid(Failure),
    Unreadable(String),
}

/// Loads and checks one file, including the checks that need the file system
/// (a `layer ... from "x.tar"` names a file that exists beside the scenario).
pub fn load(path: &Path) -> Loaded {
    load_found(&Found { path: path.to_path_buf(), base: path.parent().map(Path::to_path_buf).unwrap_or_default() })
}

/// A file read once, for the commands that rewrite it (`ovlc bless`): its
/// text and scenario come from the same bytes. A regular file (or a
/// symlink to one) only: a FIFO or a device could give other bytes to a
/// second reader.
pub fn load_once(path: &Path) -> Result<(String, Loaded), String> {
    use std::io::Read;
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{name}: not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(dsl::MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{name}: {e}"))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let loaded = match dsl::parse(&name, &dsl::scenario_id(path, &base), &bytes) {
        Ok(s) => {
            let diags = missing_tarballs(&s, path);
            if diags.is_empty() {
                Loaded::Valid(s)
            } else {
                Loaded::Invalid(Failure { name, text: text.clone(), diags })
            }
        }
        Err(f) => Loaded::Invalid(f),
    };
    Ok((text, loaded))
}

/// [`load`] of a file found under a directory the user named.
pub fn load_found(f: &Found) -> Loaded {
    let path = f.path.as_path();
    match dsl::load_under(path, &f.base) {
        Ok(s) => {
            let diags = missing_tarballs(&s, path);
            if diags.is_empty() {
                Loaded::Valid(s)
            } else {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                Loaded::Invalid(Failure { name: s.file.clone(), text, diags })
            }
        }
        Err(dsl::LoadError::Invalid(f)) => Loaded::Invalid(f),
        Err(e @ dsl::LoadError::Io { .. }) => Loaded::Unreadable(e.to_string()),
    }
}

fn missing_tarballs(s: &Scenario, path: &Path) -> Vec<Diag> {
    // A bare file name's parent is "": the directory is then ".".
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    s.layer_tarballs()
        .into_iter()
        .filter_map(|t| {
            let (what, label) = tarball_problem(base, Path::new(&t.node))?;
            Some(
                Diag::new(
                    ErrorKind::BadTarPath,
                    format!("layer tarball `{}` {what}", t.node),
                    (t.span.start, t.span.end),
                    label,
                )
                .with_help(format!(
                    "the path names a regular file inside the scenario's directory, {}, through no symlink",
                    base.display()
                )),
            )
        })
        .collect()
}

/// Why a tarball path may not be read, if it may not: it must name a regular
/// file below `base` through no symlink, or a scenario from a stranger could
/// make the host read any file (a symlink committed beside it) as a layer.
fn tarball_problem(base: &Path, rel: &Path) -> Option<(&'static str, &'static str)> {
    let mut cur = base.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (k, c) in comps.iter().enumerate() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Err(_) => return Some(("does not exist", "no such file")),
            Ok(m) if m.file_type().is_symlink() => return Some(("goes through a symlink", "a symlink")),
            Ok(m) if k + 1 == comps.len() && !m.is_file() => return Some(("is not a regular file", "not a file")),
            Ok(_) => {}
        }
    }
    None
}
