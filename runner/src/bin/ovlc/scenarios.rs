//! `ovlc check`, `ovlc fmt`, `ovlc list`, and the loading of scenario files
//! that `run` shares with them: errors are printed as they are found. The
//! atomic write `fmt` uses serves `new --force` too.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use runner::discover::{self, Loaded};
use runner::error::{Error, Result, EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MessageFormat {
    Human,
    Short,
    /// One JSON object per line and error, on standard output (for editors
    /// and CI annotations): file, line, column, end_line, end_column, code,
    /// message, label, help.
    Json,
}

pub fn default_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![PathBuf::from("scenarios")]
    } else {
        paths.to_vec()
    }
}

pub fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What `load_all` found: the valid scenarios with their files, how many
/// files, how many errors (already printed).
pub struct Library {
    pub valid: Vec<(PathBuf, dsl::Scenario)>,
    pub files: usize,
    pub errors: usize,
}

/// Loads every file under `paths` (in parallel), printing errors in file order.
pub fn load_all(paths: &[PathBuf], format: MessageFormat) -> Result<Library> {
    let files = discover::files(&default_paths(paths)).map_err(|e| Error::Usage(e.to_string()))?;
    let mut valid = Vec::new();
    let mut errors = 0;
    let stderr = std::io::stderr();
    let loaded: Vec<Loaded> = {
        use rayon::prelude::*;
        files.par_iter().map(discover::load_found).collect()
    };
    for (f, l) in files.iter().zip(loaded) {
        match l {
            Loaded::Valid(s) => valid.push((f.path.clone(), s)),
            Loaded::Invalid(fail) => {
                errors += fail.diags.len();
                match format {
                    MessageFormat::Human => {
                        let _ = stderr.lock().write_all(fail.render(color(), 100).as_bytes());
                    }
                    MessageFormat::Short => {
                        let _ = stderr.lock().write_all(fail.short().as_bytes());
                    }
                    MessageFormat::Json => json_lines(&fail.located()),
                }
            }
            Loaded::Unreadable(msg) => {
                errors += 1;
                match format {
                    MessageFormat::Json => json_lines(&[dsl::Located {
                        file: f.path.display().to_string(),
                        line: None,
                        column: None,
                        end_line: None,
                        end_column: None,
                        code: "unreadable",
                        message: msg,
                        label: String::new(),
                        help: None,
                    }]),
                    _ => eprintln!("error: {msg}"),
                }
            }
        }
    }
    Ok(Library { valid, files: files.len(), errors })
}

/// Each error as one line of JSON on standard output.
fn json_lines(errors: &[dsl::Located]) {
    let mut out = std::io::stdout().lock();
    for e in errors {
        let line = serde_json::to_string(e).unwrap_or_default();
        let _ = writeln!(out, "{line}");
    }
}

pub fn check(paths: &[PathBuf], format: MessageFormat) -> Result<u8> {
    let lib = load_all(paths, format)?;
    let summary = format!("{} scenario{}, {} error{}", lib.files, plural(lib.files), lib.errors, plural(lib.errors));
    match format {
        // Standard output holds only JSON lines.
        MessageFormat::Json => eprintln!("{summary}"),
        _ => println!("{summary}"),
    }
    Ok(if lib.errors > 0 { EXIT_BAD_INPUT } else { EXIT_PASS })
}

pub fn fmt(paths: &[PathBuf], check_only: bool) -> Result<u8> {
    let lib = load_all(paths, MessageFormat::Human)?;
    let mut changed = 0;
    for (path, s) in &lib.valid {
        let new = dsl::format(s);
        let old = std::fs::read_to_string(path).unwrap_or_default();
        if new == old {
            continue;
        }
        changed += 1;
        if check_only {
            println!("would reformat {}", path.display());
        } else {
            write_atomically(path, new.as_bytes()).map_err(|e| Error::input(path, e))?;
            println!("reformatted {}", path.display());
        }
    }
    if lib.errors > 0 {
        eprintln!("{} error{}: files with errors were left as they are", lib.errors, plural(lib.errors));
        return Ok(EXIT_BAD_INPUT);
    }
    Ok(if check_only && changed > 0 { EXIT_FAIL } else { EXIT_PASS })
}

/// Writes beside the file and renames over it, so a crash never leaves half a file.
/// A symlink is followed: its target is rewritten, the link stays. The new
/// file is made beside the target under a random name, created exclusively
/// (never through a link someone planted there), with the old file's mode
/// and owner.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&target)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".ovlc-tmp").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    std::fs::set_permissions(tmp.path(), meta.permissions())?;
    // Only root may give a file away; anyone else keeps their own.
    let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()));
    tmp.persist(&target).map(|_| ()).map_err(|e| e.error)
}

pub fn list(paths: &[PathBuf], tags: &[String], long: bool) -> Result<u8> {
    let lib = load_all(paths, MessageFormat::Human)?;
    let sel = runner::plan::Selection { tags: tags.to_vec(), partition: None };
    let mut out = std::io::stdout().lock();
    for (_, s) in &lib.valid {
        let stags = s.tags();
        if !sel.takes(&stags) {
            continue;
        }
        for inst in dsl::instances(s) {
            let line = if long {
                format!("{}\t{}\t[{}]\n", inst.id, s.title(), stags.join(", "))
            } else {
                format!("{}\n", inst.id)
            };
            if out.write_all(line.as_bytes()).is_err() {
                return Ok(EXIT_PASS); // stdout closed (`ovlc list | head`): not an error
            }
        }
    }
    Ok(if lib.errors > 0 { EXIT_BAD_INPUT } else { EXIT_PASS })
}
