//! Snapshots of upper trees (with the step results), one per instance and
//! target, stored as insta snapshot files: `snapshots/<target>/<scenario id>.snap`.
//! `ovlc run` checks or updates them; `cargo test` asserts them with insta, so
//! `cargo insta review` works on what either leaves pending (`.snap.new`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Compare with the stored snapshot; a difference or a missing snapshot fails.
    Check,
    /// Write every snapshot anew.
    Update,
    /// Neither compare nor write.
    Ignore,
}

/// Where the snapshot of an instance on a target lives.
pub fn path_for(root: &Path, target: &str, instance_id: &str) -> PathBuf {
    let mut p = root.join(target.replace(['/', ':'], "_"));
    let parts: Vec<&str> = instance_id.split('/').collect();
    for d in &parts[..parts.len().saturating_sub(1)] {
        p.push(d);
    }
    p.push(format!("{}.snap", parts.last().copied().unwrap_or("unnamed")));
    p
}

/// The snapshot's body (after the insta header), if the file exists.
pub fn read(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(body(&text).to_string())
}

fn body(text: &str) -> &str {
    if let Some(rest) = text.strip_prefix("---\n") {
        if let Some(i) = rest.find("\n---\n") {
            return &rest[i + 5..];
        }
    }
    text
}

/// Writes a snapshot file in insta's format (`new` writes `PATH.new`, pending review).
pub fn write(path: &Path, instance_id: &str, target: &str, content: &str, pending: bool) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let text = format!(
        "---\nsource: runner/tests/host_targets.rs\nexpression: \"{} on {}\"\n---\n{}\n",
        instance_id.replace('"', "'"),
        target,
        content.trim_end()
    );
    let new = PathBuf::from(format!("{}.new", path.display()));
    if pending {
        return std::fs::write(new, text);
    }
    std::fs::write(path, text)?;
    // An accepted snapshot settles whatever was pending for it.
    match std::fs::remove_file(&new) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `Some(diff)` when the stored body differs from `content` (trailing white space aside).
pub fn compare(stored: &str, content: &str) -> Option<String> {
    if stored.trim_end() == content.trim_end() {
        None
    } else {
        Some(crate::tree::diff(stored.trim_end(), content.trim_end()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_snapshot_removes_the_pending_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("a/x.snap");
        write(&p, "x", "host", "steps:\n", true).unwrap_or_else(|e| panic!("{e}"));
        assert!(dir.path().join("a/x.snap.new").exists());
        write(&p, "x", "host", "steps:\n", false).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.exists() && !dir.path().join("a/x.snap.new").exists());
    }
}
