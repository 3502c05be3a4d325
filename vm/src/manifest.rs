//! The manifest of an extracted kernel: the packages it came from and the
//! SHA256, size and modification time of every file extraction wrote. It is
//! written last (beside, then renamed), so that its presence says the
//! extraction finished; checking a tree against it says whether the tree is
//! still what was extracted.
//!
//! The file is `kernels/<release>/manifest` in the cache, one record a line:
//!
//! ```text
//! ovlc kernel manifest 1
//! release 7.3-cloud-amd64
//! package <sha256 of the .deb> <package name> <version>
//! file <sha256> <size> <mtime secs.nanosecs> <path relative to the kernel directory>
//! end <number of file lines>
//! ```
//!
//! The `end` line tells a whole manifest from a cut one.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The manifest's name in a kernel directory.
pub const FILE_NAME: &str = "manifest";
const HEADER: &str = "ovlc kernel manifest 1";
/// Files of a kernel directory that are not extracted files: the manifest,
/// the manifest being written, and the stamp of ovlc before manifests.
const OWN_FILES: [&str; 3] = [FILE_NAME, ".manifest.tmp", "complete"];

/// A file's modification time, to the nanosecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mtime {
    pub secs: i64,
    pub nsecs: i64,
}

impl Mtime {
    pub fn of(m: &std::fs::Metadata) -> Mtime {
        Mtime { secs: m.mtime(), nsecs: m.mtime_nsec() }
    }
}

/// One extracted file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the kernel directory: `vmlinuz`, `modules/<release>/kernel/...`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mtime: Mtime,
}

/// A package a tree was extracted from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub sha256: String,
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub release: String,
    pub packages: Vec<Source>,
    pub files: Vec<Entry>,
}

/// A path a manifest may name: relative, inside the directory, one line.
fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains(['\n', '\r'])
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !OWN_FILES.contains(&p)
}

impl Manifest {
    pub fn render(&self) -> String {
        let mut s = format!("{HEADER}\nrelease {}\n", self.release);
        for p in &self.packages {
            s.push_str(&format!("package {} {} {}\n", p.sha256, p.name, p.version));
        }
        for f in &self.files {
            s.push_str(&format!("file {} {} {}.{:09} {}\n", f.sha256, f.size, f.mtime.secs, f.mtime.nsecs, f.path));
        }
        s.push_str(&format!("end {}\n", self.files.len()));
        s
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, HEADER)) => {}
            Some((_, other)) => return Err(format!("not an ovlc kernel manifest (first line `{other}`)")),
            None => return Err("empty".into()),
        }
        let mut m = Manifest::default();
        let mut end = None;
        for (i, line) in lines {
            let bad = |why: &str| format!("line {}: {why}", i + 1);
            if end.is_some() {
                return Err(bad("text after the end line"));
            }
            let (kw, rest) = line.split_once(' ').ok_or_else(|| bad("no fields"))?;
            match kw {
                "release" => m.release = rest.to_string(),
                "package" => {
                    let w: Vec<&str> = rest.splitn(3, ' ').collect();
                    let [sha256, name, version] = w[..] else { return Err(bad("a package line needs 3 fields")) };
                    m.packages.push(Source { sha256: sha256.into(), name: name.into(), version: version.into() });
                }
                "file" => {
                    let w: Vec<&str> = rest.splitn(4, ' ').collect();
                    let [sha256, size, mtime, path] = w[..] else { return Err(bad("a file line needs 4 fields")) };
                    let size = size.parse().map_err(|_| bad("the size is not a number"))?;
                    let (secs, nsecs) = mtime.split_once('.').ok_or_else(|| bad("the mtime is not secs.nanosecs"))?;
                    let mtime = Mtime {
                        secs: secs.parse().map_err(|_| bad("the mtime is not a number"))?,
                        nsecs: nsecs.parse().map_err(|_| bad("the mtime is not a number"))?,
                    };
                    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad("the SHA256 is not 64 hex digits"));
                    }
                    if !valid_path(path) {
                        return Err(bad("the path is not a relative path inside the kernel directory"));
                    }
                    m.files.push(Entry { path: path.into(), size, sha256: sha256.into(), mtime });
                }
                "end" => end = Some(rest.parse::<usize>().map_err(|_| bad("the count is not a number"))?),
                _ => return Err(bad(&format!("unknown record `{kw}`"))),
            }
        }
        match end {
            Some(n) if n == m.files.len() => Ok(m),
            Some(n) => Err(format!("{} file lines, the end line says {n}", m.files.len())),
            None => Err("cut short (no end line)".into()),
        }
    }

    /// Reads `dir/manifest`: `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, String> {
        match std::fs::read(dir.join(FILE_NAME)) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
                Manifest::parse(&text).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes `dir/manifest` atomically (beside, then renamed).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".manifest.tmp");
        std::fs::write(&tmp, self.render())?;
        std::fs::rename(&tmp, dir.join(FILE_NAME))
    }
}

/// SHA256 of a file, read in pieces.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// How closely to look at a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Every file is there, a regular file of its size; the SHA256 of
    /// `vmlinuz` and of every file whose mtime changed. One `stat` a file:
    /// what `kernels list` and each run pay.
    Quick,
    /// The SHA256 of every file, and no files besides: what `kernels fetch` pays.
    Full,
}

/// What is wrong with one file of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Missing(String),
    NotAFile(String),
    Size {
        path: String,
        expected: u64,
        got: u64,
    },
    /// The size is right, the SHA256 is not.
    Content(String),
    Unreadable {
        path: String,
        why: String,
    },
    /// A file extraction did not write (a full check only).
    Unexpected(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing(p) => write!(f, "{p} is missing"),
            Problem::NotAFile(p) => write!(f, "{p} is not a regular file"),
            Problem::Size { path, expected, got } => write!(f, "{path} is {got} bytes, not {expected}"),
            Problem::Content(p) => write!(f, "{p} has the wrong SHA256"),
            Problem::Unreadable { path, why } => write!(f, "{path} cannot be read ({why})"),
            Problem::Unexpected(p) => write!(f, "{p} was not extracted"),
        }
    }
}

/// What a check of a tree found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub problems: Vec<Problem>,
    /// Indexes of files whose mtime changed but whose content was verified:
    /// recording their new mtimes spares the next quick check their hashes.
    pub moved_mtimes: Vec<usize>,
}

/// Checks the tree `dir` against its manifest.
pub fn check(dir: &Path, m: &Manifest, depth: Depth) -> Checked {
    let mut out = Checked::default();
    for (i, e) in m.files.iter().enumerate() {
        let p = dir.join(&e.path);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                out.problems.push(Problem::Missing(e.path.clone()));
                continue;
            }
            Err(err) => {
                out.problems.push(Problem::Unreadable { path: e.path.clone(), why: err.to_string() });
                continue;
            }
        };
        if !meta.file_type().is_file() {
            out.problems.push(Problem::NotAFile(e.path.clone()));
            continue;
        }
        if meta.len() != e.size {
            out.problems.push(Problem::Size { path: e.path.clone(), expected: e.size, got: meta.len() });
            continue;
        }
        let moved = Mtime::of(&meta) != e.mtime;
        if depth == Depth::Full || moved || e.path == "vmlinuz" {
            match sha256_file(&p) {
                Ok(sum) if sum == e.sha256 => {
                    if moved {
                        out.moved_mtimes.push(i);
                    }
                }
                Ok(_) => out.problems.push(Problem::Content(e.path.clone())),
                Err(err) => out.problems.push(Problem::Unreadable { path: e.path.clone(), why: err.to_string() }),
            }
        }
    }
    if depth == Depth::Full {
        let known: std::collections::HashSet<&str> = m.files.iter().map(|e| e.path.as_str()).collect();
        let mut extra = Vec::new();
        unexpected(dir, "", &known, &mut extra);
        extra.sort();
        out.problems.extend(extra.into_iter().map(Problem::Unexpected));
    }
    out
}

/// Files (anything but directories) under `dir` that the manifest does not name.
fn unexpected(dir: &Path, prefix: &str, known: &std::collections::HashSet<&str>, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir.join(prefix)) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        if prefix.is_empty() && OWN_FILES.contains(&name.as_str()) {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            unexpected(dir, &rel, known, out);
        } else if !known.contains(rel.as_str()) {
            out.push(rel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            release: "7.3-cloud-amd64".into(),
            packages: vec![Source {
                sha256: "ab".repeat(32),
                name: "linux-binary-7.3".into(),
                version: "7.3~rc7-1".into(),
            }],
            files: vec![
                Entry { path: "vmlinuz".into(), size: 3, sha256: "cd".repeat(32), mtime: Mtime { secs: 5, nsecs: 7 } },
                Entry {
                    path: "modules/7.3-cloud-amd64/kernel/a b.ko".into(),
                    size: 0,
                    sha256: "ef".repeat(32),
                    mtime: Mtime { secs: -1, nsecs: 999_999_999 },
                },
            ],
        }
    }

    #[test]
    fn a_manifest_reads_back_what_was_written_and_refuses_a_cut_or_altered_one() {
        let m = sample();
        let text = m.render();
        assert!(text.contains("\nfile cdcd"), "{text}");
        assert!(text.contains(" 5.000000007 vmlinuz\n"), "{text}");
        assert_eq!(Manifest::parse(&text), Ok(m));
        // Cut anywhere before the end line: refused.
        let cut = &text[..text.find("end").unwrap()];
        assert!(Manifest::parse(cut).unwrap_err().contains("no end line"));
        let one_less = text.replacen("file cdcd", "x", 1);
        assert!(Manifest::parse(&one_less).is_err());
        assert!(Manifest::parse(&text.replace("end 2", "end 3")).is_err());
        assert!(Manifest::parse(&text.replace(" vmlinuz\n", " ../vmlinuz\n")).is_err());
        assert!(Manifest::parse(&text.replace(" vmlinuz\n", " manifest\n")).is_err());
        assert!(Manifest::parse("").is_err());
        assert!(Manifest::parse("complete\n").is_err());
    }
}
