//! `ovlc kernels`: the catalog of VM kernels, its lock file, and the verified
//! download cache.

use std::path::Path;

use clap::Subcommand;
use runner::error::{Error, Result, EXIT_INFRA, EXIT_PASS};
use vm::kernels as k;

use crate::scenarios::plural;

#[derive(Subcommand, Debug)]
pub enum KernelsCmd {
    /// Each kernel of the catalog: its locked release and version, and the state of its cache:
    /// cached, not cached, outdated, or damaged (and how). The check is quick: every file of the
    /// kernel's manifest present at its size, the SHA256 of vmlinuz and of files whose mtime moved.
    List {
        /// Check every file's SHA256 against the manifest, as `fetch` does.
        #[arg(long)]
        full: bool,
    },
    /// Download, verify and extract locked kernels (default: all) into the cache. A cached kernel
    /// is checked in full (every file's SHA256 against its manifest, no stray files) and extracted
    /// again if damaged: from its cached .deb when that verifies, else downloaded.
    Fetch { names: Vec<String> },
    /// Resolve every catalog entry to the newest package of its series and rewrite the lock.
    Update,
}

pub fn kernels(cmd: KernelsCmd, catalog_file: Option<&Path>) -> Result<u8> {
    // `update` rewrites a lock file: the checkout's when run from it.
    let checkout = Path::new("vm/kernels.toml");
    let catalog_file = match (&cmd, catalog_file) {
        (KernelsCmd::Update, None) if checkout.is_file() => Some(checkout),
        (_, f) => f,
    };
    let source = k::CatalogSource::from_arg(catalog_file);
    let catalog = source.catalog().map_err(|e| Error::Usage(e.to_string()))?;
    match cmd {
        KernelsCmd::List { full } => list(&source, &catalog, full),
        KernelsCmd::Update => update(&source, &catalog),
        KernelsCmd::Fetch { names } => fetch(&source, &names),
    }
}

fn list(source: &k::CatalogSource, catalog: &k::Catalog, full: bool) -> Result<u8> {
    let cache = k::cache_dir();
    let lock = source.lock().unwrap_or_default();
    let depth = if full { k::Depth::Full } else { k::Depth::Quick };
    println!("{:<6} {:<13} {:<28} {:<18} {:<9} cache", "name", "suite", "release", "version", "layout");
    for e in &catalog.kernels {
        let Some(l) = lock.kernels.iter().find(|l| l.name == e.name) else {
            println!("{:<6} {:<13} (not locked: run `ovlc kernels update`)", e.name, e.suite);
            continue;
        };
        let state = k::cache_state(l, &cache, depth);
        let hint = match state {
            k::CacheState::Cached | k::CacheState::Absent => String::new(),
            _ => format!(" (`ovlc kernels fetch {}` repairs it)", l.name),
        };
        println!(
            "{:<6} {:<13} {:<28} {:<18} {:<9} {state}{hint}",
            e.name,
            e.suite,
            l.release,
            l.version,
            format!("{:?}", l.layout).to_lowercase(),
        )
    }
    let leftovers = k::partials(&cache);
    if !leftovers.is_empty() {
        println!(
            "{} leftover{} of interrupted fetches in {} (the next `ovlc kernels fetch` removes them)",
            leftovers.len(),
            plural(leftovers.len()),
            cache.display()
        );
    }
    Ok(EXIT_PASS)
}

fn update(source: &k::CatalogSource, catalog: &k::Catalog) -> Result<u8> {
    let Some(lock_path) = source.lock_path() else {
        return Err(Error::Usage(
            "the built-in catalog cannot be rewritten: run this from the checkout, or give \
             --catalog FILE (its kernels.lock is written beside it)"
                .into(),
        ));
    };
    let mirror = k::mirror()?;
    let lock = k::update(catalog, &mirror)?;
    k::write_lock(&lock_path, &lock)?;
    for l in &lock.kernels {
        println!("{:<6} {} ({}, {})", l.name, l.release, l.version, l.suite);
    }
    println!("wrote {}", lock_path.display());
    Ok(EXIT_PASS)
}

fn fetch(source: &k::CatalogSource, names: &[String]) -> Result<u8> {
    let lock =
        source.lock().map_err(|e| Error::Usage(format!("{e} (run `ovlc kernels update` to create the lock)")))?;
    if let Some(n) = names.iter().find(|n| !lock.kernels.iter().any(|l| &l.name == *n)) {
        return Err(Error::Usage(format!(
            "no kernel {n} in the lock (kernels: {})",
            lock.kernels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let mirror = k::mirror()?;
    let cache = k::cache_dir();
    let mut failed = false;
    for l in lock.kernels.iter().filter(|l| names.is_empty() || names.contains(&l.name)) {
        match k::fetch_kernel_checked(&mirror, l, &cache, k::Depth::Full) {
            Ok(f) => fetched(l, &f),
            Err(e @ vm::VmError::Kernel { .. }) => {
                eprintln!("error: {e}");
                failed = true;
            }
            Err(e) => {
                eprintln!("error: kernel {}: {e}", l.name);
                failed = true;
            }
        }
    }
    Ok(if failed { EXIT_INFRA } else { EXIT_PASS })
}

/// What a fetch did to one kernel's cache.
fn fetched(l: &k::LockedKernel, f: &k::Fetched) {
    for p in &f.removed {
        println!("removed {} (left by an interrupted fetch)", p.display());
    }
    let done = f.describe_extraction();
    match &f.before {
        k::CacheState::Cached => println!("{:<6} cached: every file's SHA256 verified against its manifest", l.name),
        k::CacheState::Absent => println!("{:<6} fetched: {done}", l.name),
        was => {
            let verb = match was {
                k::CacheState::Damaged(_) | k::CacheState::BadManifest(_) => "repaired",
                _ => "extracted again",
            };
            println!("{:<6} {verb}: {done}\n       (it was {was})", l.name);
        }
    }
    println!("       {} {}", f.files.vmlinuz.display(), f.files.modules.display());
}
