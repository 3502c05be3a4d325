//! `ovlc repro ID --target T`: a standalone shell script reproducing one
//! instance, for a bug report (the generator is `runner::repro`).

use std::io::Write;
use std::path::{Path, PathBuf};

use runner::error::{Error, Result, EXIT_BAD_INPUT, EXIT_PASS};
use runner::model::Plan;
use runner::plan::Target;
use runner::repro::{self, Context, Refusal};

use crate::scenarios::{load_all, MessageFormat};

pub fn repro(id: &str, target: &str, out: Option<&Path>, from_run: Option<&Path>, paths: &[PathBuf]) -> Result<u8> {
    let t = Target::parse(target).ok_or_else(|| {
        Error::Usage(format!(
            "unknown target {target} (host, host-rootless, host-fuse, vm:KERNEL, vm:KERNEL/rootless, vm:KERNEL/fuse)"
        ))
    })?;
    let (kernel, kernel_release) =
        match &t {
            Target::Host(_) => {
                let (rel, k) = runner::sys::kernel_release();
                (k, rel)
            }
            // A catalog kernel is named by its version (`vm:6.12`): conditions
            // compare with that, patch level 0.
            Target::Vm(v) if v.kernel != runner::targets::vm::CUSTOM => {
                (runner::sys::parse_release(&v.kernel), format!("{} (the catalog's {} series)", t.name(), v.kernel))
            }
            Target::Vm(_) => return Err(Error::Usage(
                "vm:custom: the reproducer needs a kernel version for the scenario's conditions; name a catalog kernel"
                    .into(),
            )),
        };
    let lib = load_all(paths, MessageFormat::Human)?;
    let found = lib
        .valid
        .iter()
        .find_map(|(path, s)| dsl::instances(s).into_iter().find(|i| i.id == id).map(|i| (path.clone(), s.clone(), i)));
    let Some((path, s, inst)) = found else {
        return Err(Error::Usage(format!("no instance {id} under the paths given (`ovlc list` names them)")));
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut cx = Context { kernel, kernel_release, ..Context::default() };
    for (name, tar) in repro::tarball_layers(&s) {
        let entries = repro::tar_entries(&dir.join(&tar)).map_err(Error::Usage)?;
        cx.tar_layers.insert(name, entries);
    }
    if let Some(f) = from_run {
        cx.from_run = Some(run_steps(f, id, &t.name())?);
    }
    let plan = Plan { scenario_dir: dir, ..Plan::new(inst, s, t.name(), t.driver()) };
    let text = match repro::script(&plan, &cx) {
        Ok(text) => text,
        Err(r @ (Refusal::Skip(_) | Refusal::Cannot { .. })) => {
            eprintln!("ovlc repro: {id} on {}: {r}", t.name());
            return Ok(EXIT_BAD_INPUT);
        }
    };
    match out {
        Some(f) => {
            std::fs::write(f, &text)
                .map_err(|source| Error::Io { what: format!("writing {}", f.display()), source })?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755));
        }
        None => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
    Ok(EXIT_PASS)
}

/// The steps of ovlc's run of `id` on `target` in a JSON report (`ovlc run
/// --format json`): line, statement, result.
fn run_steps(file: &Path, id: &str, target: &str) -> Result<Vec<(u32, String, String)>> {
    let bytes =
        std::fs::read(file).map_err(|source| Error::Io { what: format!("reading {}", file.display()), source })?;
    let doc: runner::model::RunReport = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Usage(format!("{}: not a report of `ovlc run --format json`: {e}", file.display())))?;
    let o = doc
        .results
        .iter()
        .find(|o| o.id == id && o.target == target)
        .ok_or_else(|| Error::Usage(format!("{}: no result of {id} on {target}", file.display())))?;
    Ok(o.steps.iter().map(|s| (s.line, s.text.clone(), s.result.clone())).collect())
}
