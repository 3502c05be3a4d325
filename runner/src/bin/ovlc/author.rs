//! `ovlc bless`, `ovlc exercise`, `ovlc grade`: a scenario file run on one
//! target, and what it did written into the file, asked, or graded
//! (`runner::author`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use runner::author::{self, Verdict};
use runner::discover::{self, Loaded};
use runner::error::{Error, Result, EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS};
use runner::model::Outcome;

use crate::progress::Progress;
use crate::run::{options, RunArgs};
use crate::scenarios::color;

/// The file read once, its text and scenario, or the exit code of its
/// errors (printed).
fn load(file: &Path) -> Result<std::result::Result<(String, dsl::Scenario), u8>> {
    let (text, loaded) = discover::load_once(file).map_err(Error::Usage)?;
    match loaded {
        Loaded::Valid(s) => Ok(Ok((text, s))),
        Loaded::Invalid(f) => {
            eprint!("{}", f.render(color(), 100));
            Ok(Err(EXIT_BAD_INPUT))
        }
        Loaded::Unreadable(e) => Err(Error::Usage(e)),
    }
}

/// Text from a scenario shown on a terminal: control characters (escape
/// sequences) as `\u{..}`, line breaks kept.
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' && c != '\t' { c.escape_unicode().to_string() } else { c.to_string() })
        .collect()
}

/// Every instance of the file on one target.
fn run_file(
    file: &Path,
    s: &dsl::Scenario,
    target: &str,
    fuse: Option<PathBuf>,
    explain: bool,
) -> Result<Vec<Outcome>> {
    runner::engine::isolate()?;
    let args = RunArgs {
        paths: vec![file.to_path_buf()],
        target: vec![target.to_string()],
        backing: None,
        tags: Vec::new(),
        jobs: Some(1),
        format: crate::run::OutputFormat::Json,
        snapshots: runner::snapshot::SnapshotMode::Ignore,
        snapshot_dir: PathBuf::from("snapshots"),
        fuse_overlayfs: fuse,
        layer_roundtrip: false,
        kernel_image: None,
        modules: None,
        catalog: None,
        partition: None,
        repeat: 1,
        seed: None,
        bisect: false,
        outputs: Default::default(),
    };
    let mut opts = options(&args)?;
    if opts.targets.len() != 1 {
        return Err(Error::Usage("give one target".into()));
    }
    opts.plan.explain = explain;
    runner::engine::preflight(&opts)?;
    let lib = vec![(file.to_path_buf(), s.clone())];
    let doc = runner::engine::run(&opts, &lib, &Progress::new(false))?;
    Ok(doc.results)
}

pub fn bless(file: &Path, target: &str, yes: bool, fuse: Option<PathBuf>) -> Result<u8> {
    let (text, s) = match load(file)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let outcomes = run_file(file, &s, target, fuse, false)?;
    let name = file.display().to_string();
    let b = author::bless(&name, &text, &s, &outcomes).map_err(|e| Error::Usage(format!("{name}: {e}")))?;
    let mut left = 0;
    for p in &b.places {
        match &p.outcome {
            Ok(w) => eprintln!("{name}:{}: {}  ->  {w}", p.line, p.text),
            Err(why) => {
                left += 1;
                eprintln!("{name}:{}: {}  left as it is: {why}", p.line, p.text);
            }
        }
    }
    if b.text == text {
        eprintln!("{name}: nothing to bless on {target}");
        return Ok(if left > 0 { EXIT_FAIL } else { EXIT_PASS });
    }
    print!("{}", unified(&name, &text, &b.text));
    let write = yes || ask(&format!("write these changes to {name}? [y/N] "));
    if !write {
        eprintln!("{name}: not written (answer y, or give --yes)");
        return Ok(EXIT_FAIL);
    }
    crate::scenarios::write_atomically(file, b.text.as_bytes()).map_err(|e| Error::input(file, e))?;
    eprintln!("{name}: blessed on {target}");
    Ok(if left > 0 { EXIT_FAIL } else { EXIT_PASS })
}

/// Asks on the terminal; `false` without one (never unattended).
fn ask(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes")
}

/// A diff of two texts in the unified style, with three lines of context
/// (the whole of both when they are too large to compare line by line).
fn unified(name: &str, old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let ops = runner::tree::line_diff(&a, &b)
        .unwrap_or_else(|| a.iter().map(|l| ('-', *l)).chain(b.iter().map(|l| ('+', *l))).collect());
    render(name, &ops)
}

fn render(name: &str, ops: &[(char, &str)]) -> String {
    let near = |k: usize| ops[k.saturating_sub(3)..(k + 4).min(ops.len())].iter().any(|o| o.0 != ' ');
    let mut out = format!("--- {name}\n+++ {name} (blessed)\n");
    let mut gap = false;
    for (k, (c, l)) in ops.iter().enumerate() {
        if near(k) {
            out.push_str(&format!("{c}{l}\n"));
            gap = false;
        } else if !gap {
            out.push_str("@@\n");
            gap = true;
        }
    }
    out
}

pub fn exercise(file: &Path) -> Result<u8> {
    let (text, s) = match load(file)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    let title = s.title();
    let _ = writeln!(out, "Exercise: {}", shown(title.strip_prefix("Exercise: ").unwrap_or(&title)));
    if let Some(about) = s.about() {
        let _ = writeln!(out, "\n{}", shown(about.trim_end()));
    }
    let _ = writeln!(out, "\nThe scenario ({}):\n", file.display());
    let places = author::places(&s);
    let mut n = 0;
    // The file's own lines from the first statement after the header, with
    // their numbers (the questions name them), blank lines aside.
    use dsl::ast::Stmt;
    let first = s
        .body
        .items
        .iter()
        .find(|i| !matches!(i.node, Stmt::Scenario(_) | Stmt::About(_) | Stmt::Tags(_)))
        .map_or(u32::MAX, |i| i.span.line);
    for (k, line) in text.lines().enumerate().skip(first.saturating_sub(1) as usize) {
        if !line.trim().is_empty() {
            let _ = writeln!(out, "  {:>4}  {}", k + 1, shown(line));
        }
    }
    let _ = writeln!(out, "\nQuestions:");
    for p in places.iter().filter(|p| p.is_open()) {
        n += 1;
        let ask = match p.said {
            author::Said::Tree { .. } => "which paths, with what content, does this tree hold?",
            _ => "what is the result?",
        };
        let _ = writeln!(out, "  {n}. line {}: {}  ({ask})", p.line, shown(&p.text));
    }
    if n == 0 {
        let _ = writeln!(out, "  (none: this scenario has no `?`)");
    }
    let _ = writeln!(
        out,
        "\nCopy the file, replace each `?` with your answer (a result such as ok, ENOENT, \"text\" or [a, b];\n\
         for a tree, a block `{{ ... }}` of checks such as `file /a \"x\"`, `whiteout /b`), then:\n  \
         ovlc grade YOUR-COPY.ovl --target host"
    );
    Ok(EXIT_PASS)
}

pub fn grade(file: &Path, target: &str, fuse: Option<PathBuf>) -> Result<u8> {
    let (_, s) = match load(file)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    if let Err(e) = author::grade(&s, &[]) {
        return Err(Error::Usage(format!("{}: {e}", file.display())));
    }
    // A tree's answer names the whole tree (the answers as written are graded).
    let written = s.clone();
    let mut s = s;
    author::strict(&mut s);
    let outcomes = run_file(file, &s, target, fuse, true)?;
    let kernel = outcomes.first().map(|o| o.kernel.clone()).unwrap_or_default();
    if let Some(o) = outcomes.iter().find(|o| o.steps.is_empty()) {
        eprintln!(
            "{}: {} on {target}: {}",
            file.display(),
            o.status.name(),
            o.reason.as_deref().unwrap_or("nothing ran")
        );
    }
    let graded = author::grade(&written, &outcomes).map_err(Error::Usage)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{} on {target} (kernel {kernel})\n", shown(&s.title()));
    for g in &graded {
        let mark = match g.verdict {
            Verdict::Right => "right",
            Verdict::Wrong => "WRONG",
            Verdict::Unanswered => "not answered",
            Verdict::NotAsked => "not asked on this target",
        };
        let _ = writeln!(out, "{:>2}. line {}: {}  -- {mark}", g.number, g.line, shown(&g.text));
        if let Some(real) = &g.real {
            let real = shown(real);
            let mut lines = real.lines();
            let first = lines.next().unwrap_or("(an empty tree)");
            let _ = writeln!(out, "      the kernel: {first}");
            for l in lines {
                let _ = writeln!(out, "                  {l}");
            }
        }
        for w in &g.why {
            let _ = writeln!(out, "      why: {}", shown(w));
        }
        for e in &g.explain {
            let _ = writeln!(out, "      {}", shown(e));
        }
    }
    let (right, asked) = author::score(&graded);
    let _ = writeln!(out, "\nscore: {right}/{asked}");
    Ok(if right == asked && asked > 0 { EXIT_PASS } else { EXIT_FAIL })
}
