//! `ovlc`: the command line of the OverlayFS conformance suite.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use runner::discover::{self, Loaded};

/// Exit codes (see the README): 0 all passed, 1 a scenario failed (or `fmt --check`
/// found a file to reformat), 2 bad input or usage, 3 infrastructure failed.
const EXIT_FAIL: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "ovlc", version, about = "OverlayFS conformance suite", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and validate scenario files (recursively under directories).
    Check {
        /// Files or directories; default `scenarios`.
        paths: Vec<PathBuf>,
        /// How to print errors: `human` (snippets) or `short` (one line each).
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Rewrite scenario files in the canonical layout.
    Fmt {
        /// Only report files whose layout differs (exit 1 when any does).
        #[arg(long)]
        check: bool,
        /// Files or directories; default `scenarios`.
        paths: Vec<PathBuf>,
    },
    /// List scenario instances (after `vary`), one per line.
    List {
        /// Only scenarios with this tag (repeatable: any of them).
        #[arg(long = "tag", short = 't')]
        tags: Vec<String>,
        /// Also print each scenario's title and tags.
        #[arg(long)]
        long: bool,
        /// Files or directories; default `scenarios`.
        paths: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MessageFormat {
    Human,
    Short,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check { paths, message_format } => check(&paths, message_format),
        Command::Fmt { check, paths } => fmt(&paths, check),
        Command::List { tags, long, paths } => list(&paths, &tags, long),
    };
    ExitCode::from(code)
}

fn default_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![PathBuf::from("scenarios")]
    } else {
        paths.to_vec()
    }
}

fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Loads every file under `paths`, printing errors as it goes.
/// Returns the valid scenarios and the number of errors.
/// What `load_all` found: the valid scenarios with their files, how many files, how many errors.
type Library = (Vec<(PathBuf, dsl::Scenario)>, usize, usize);

fn load_all(paths: &[PathBuf], format: MessageFormat) -> Result<Library, u8> {
    let files = match discover::files(&default_paths(paths)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_BAD_INPUT);
        }
    };
    let mut valid = Vec::new();
    let mut errors = 0;
    let stderr = std::io::stderr();
    // Parse in parallel, report in file order.
    let loaded: Vec<Loaded> = {
        use rayon::prelude::*;
        files.par_iter().map(|f| discover::load(f)).collect()
    };
    for (f, l) in files.iter().zip(loaded) {
        match l {
            Loaded::Valid(s) => valid.push((f.clone(), s)),
            Loaded::Invalid(fail) => {
                errors += fail.diags.len();
                let text = match format {
                    MessageFormat::Human => fail.render(color(), 100),
                    MessageFormat::Short => fail.short(),
                };
                let _ = stderr.lock().write_all(text.as_bytes());
            }
            Loaded::Unreadable(msg) => {
                errors += 1;
                eprintln!("error: {msg}");
            }
        }
    }
    Ok((valid, files.len(), errors))
}

fn check(paths: &[PathBuf], format: MessageFormat) -> u8 {
    let (_, n, errors) = match load_all(paths, format) {
        Ok(x) => x,
        Err(code) => return code,
    };
    println!("{n} scenario{}, {errors} error{}", plural(n), plural(errors));
    if errors > 0 {
        EXIT_BAD_INPUT
    } else {
        0
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn fmt(paths: &[PathBuf], check_only: bool) -> u8 {
    let (valid, _, errors) = match load_all(paths, MessageFormat::Human) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut changed = 0;
    for (path, s) in &valid {
        let new = dsl::format(s);
        let old = std::fs::read_to_string(path).unwrap_or_default();
        if new == old {
            continue;
        }
        changed += 1;
        if check_only {
            println!("would reformat {}", path.display());
        } else if let Err(e) = write_atomically(path, new.as_bytes()) {
            eprintln!("error: {}: {e}", path.display());
            return EXIT_BAD_INPUT;
        } else {
            println!("reformatted {}", path.display());
        }
    }
    if errors > 0 {
        eprintln!("{errors} error{}: files with errors were left as they are", plural(errors));
        return EXIT_BAD_INPUT;
    }
    if check_only && changed > 0 {
        return EXIT_FAIL;
    }
    0
}

/// Writes beside the file and renames over it, so a crash never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ovlc-fmt.{}", std::process::id()));
    let perms = std::fs::metadata(path)?.permissions();
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, perms)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn list(paths: &[PathBuf], tags: &[String], long: bool) -> u8 {
    let (valid, _, errors) = match load_all(paths, MessageFormat::Human) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    for (_, s) in &valid {
        let stags = s.tags();
        if !tags.is_empty() && !tags.iter().any(|t| stags.contains(t)) {
            continue;
        }
        for inst in dsl::instances(s) {
            let line = if long {
                format!("{}\t{}\t[{}]\n", inst.id, s.title(), stags.join(", "))
            } else {
                format!("{}\n", inst.id)
            };
            if out.write_all(line.as_bytes()).is_err() {
                return 0; // stdout closed (`ovlc list | head`): not an error
            }
        }
    }
    if errors > 0 {
        EXIT_BAD_INPUT
    } else {
        0
    }
}
