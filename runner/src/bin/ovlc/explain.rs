//! `ovlc explain`: one instance on a host target, told step by step: the
//! system calls, their results, and what changed in the upper.

use std::path::{Path, PathBuf};

use runner::discover::{self, Loaded};
use runner::error::{Error, Result, EXIT_BAD_INPUT};
use runner::model::{Plan, Summary};
use runner::plan;
use runner::targets::host::{self, HostTarget, Workspace};

use crate::scenarios::color;

pub fn explain(scenario: &str, target: &str, fuse: Option<PathBuf>) -> Result<u8> {
    runner::engine::isolate()?;
    let t = HostTarget::parse(target).ok_or_else(|| {
        Error::Usage(format!("unknown target {target} (host targets: host, host-rootless, host-fuse)"))
    })?;
    let (path, params) = plan::explain_path(scenario, Path::is_file);
    let s = match discover::load(&path) {
        Loaded::Valid(s) => s,
        Loaded::Invalid(f) => {
            eprint!("{}", f.render(color(), 100));
            return Ok(EXIT_BAD_INPUT);
        }
        Loaded::Unreadable(e) => {
            return Err(Error::Usage(format!("{e} (give a scenario file or an id under scenarios/)")));
        }
    };
    let instances = dsl::instances(&s);
    let Some(inst) = plan::pick_instance(&instances, params.as_deref()).cloned() else {
        return Err(Error::Usage(format!(
            "{scenario}: no such instance; instances are: {}",
            instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(", ")
        )));
    };
    let plan = Plan {
        scenario_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        explain: true,
        fuse_binary: fuse,
        ..Plan::new(inst, s.clone(), t.name().to_string(), t.driver())
    };
    let ws =
        Workspace::new().map_err(|source| Error::Io { what: "cannot create a temporary directory".into(), source })?;
    let o = host::run(&ws, &plan, t);
    if let Some(about) = s.about() {
        println!("{}\n", about.trim_end());
    }
    print!("{}", runner::report::explain::narrate(&o));
    Ok(Summary::of(std::slice::from_ref(&o)).exit_code())
}
