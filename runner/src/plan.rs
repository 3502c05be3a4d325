//! From scenarios to plans: which targets a run asks for (`vm:6.1/rootless+ext4`),
//! which instances it selects (tags, a partition), and one serialisable
//! [`Plan`] per (instance, target). Pure but for the few facts of this
//! machine the default targets need.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dsl::ast::{Backing, Driver};

use crate::error::{Error, Result};
use crate::model::{Fault, Plan, ScenarioInfo};
use crate::sys::programs;
use crate::targets::host::HostTarget;
use crate::targets::vm::{VmTarget, CUSTOM};

/// A target of `ovlc run`: a host driver, or a driver in a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Host(HostTarget),
    Vm(VmTarget),
}

impl Target {
    /// `host`, `host-fuse`, `vm:6.1/rootless`, ...; `None` for other names.
    pub fn parse(name: &str) -> Option<Target> {
        match (HostTarget::parse(name), VmTarget::parse(name)) {
            (Some(h), _) => Some(Target::Host(h)),
            (None, Some(v)) => Some(Target::Vm(v)),
            _ => None,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Target::Host(h) => h.name().to_string(),
            Target::Vm(v) => v.name(),
        }
    }

    pub fn driver(&self) -> Driver {
        match self {
            Target::Host(h) => h.driver(),
            Target::Vm(v) => v.driver,
        }
    }
}

/// A target with the backing filesystem it asks for (`+ext4`), if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub target: Target,
    pub backing: Option<Backing>,
}

impl TargetSpec {
    /// `vm:6.1/rootless+ext4`: a target's name, then `+` and a backing.
    /// Module parameters follow (`vm:6.1/rootless+ext4?index=1`).
    pub fn parse(name: &str) -> Result<TargetSpec> {
        let (main, query) = match name.split_once('?') {
            Some((m, q)) => (m, format!("?{q}")),
            None => (name, String::new()),
        };
        let (n, backing) = match main.split_once('+') {
            Some((t, b)) => (t, Some(parse_backing(b)?)),
            None => (main, None),
        };
        let n = &format!("{n}{query}");
        let Some(target) = Target::parse(n) else {
            return Err(Error::Usage(format!(
                "unknown target {n} (host, host-rootless, host-fuse, vm:KERNEL, vm:KERNEL/rootless, vm:KERNEL/fuse; \
                 a VM target may set overlay module parameters: vm:5.10/rootless?permit_mounts_in_userns=1)"
            )));
        };
        Ok(TargetSpec { target, backing })
    }
}

/// `tmpfs`, `ext4`, `xfs` or `btrfs`.
pub fn parse_backing(s: &str) -> Result<Backing> {
    Backing::ALL
        .into_iter()
        .find(|b| b.name() == s)
        .ok_or_else(|| Error::Usage(format!("unknown backing {s} (tmpfs, ext4, xfs, btrfs)")))
}

/// Targets with the backing each asks for, without repeats, in the order given.
pub fn parse_targets(names: &[String]) -> Result<Vec<TargetSpec>> {
    let mut out = Vec::new();
    for n in names.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let spec = TargetSpec::parse(n)?;
        if !out.contains(&spec) {
            out.push(spec);
        }
    }
    if out.is_empty() {
        return Err(Error::Usage("no target given".into()));
    }
    Ok(out)
}

/// Without `--target`: the host targets that can run here, and every catalog
/// kernel with the kernel driver.
pub fn default_targets(catalog: &vm::kernels::CatalogSource) -> Vec<String> {
    let mut t = vec!["host".to_string(), "host-rootless".to_string()];
    if programs::fuse_unavailable(None).is_none() {
        t.push("host-fuse".into());
    }
    if let Ok(c) = catalog.catalog() {
        t.extend(c.kernels.iter().map(|k| format!("vm:{}", k.name)));
    }
    t
}

/// The first `vm:KERNEL` whose kernel is not in the catalog (nor `custom`),
/// with the catalog's names.
pub fn unknown_kernel<'a>(targets: &'a [TargetSpec], catalog: &[&str]) -> Option<&'a str> {
    targets.iter().find_map(|s| match &s.target {
        Target::Vm(v) if v.kernel != CUSTOM && !catalog.contains(&v.kernel.as_str()) => Some(v.kernel.as_str()),
        _ => None,
    })
}

/// Does any target boot a kernel of the user's own?
pub fn wants_custom_kernel(targets: &[TargetSpec]) -> bool {
    targets.iter().any(|s| matches!(&s.target, Target::Vm(v) if v.kernel == CUSTOM))
}

/// Is instance `index` (of a run's instances in order) in partition `k` of `n` (1-based)?
/// Round robin: partitions differ in size by at most one instance.
pub fn in_partition(index: usize, k: usize, n: usize) -> bool {
    n > 0 && index % n == k - 1
}

/// Reads `K/N` (1 <= K <= N).
pub fn parse_partition(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::Usage(format!("--partition {s}: expected K/N with 1 <= K <= N, such as 2/4"));
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// Which instances a run takes.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only scenarios with one of these tags (all when empty).
    pub tags: Vec<String>,
    /// Only partition K of N of the instances.
    pub partition: Option<(usize, usize)>,
}

impl Selection {
    /// Does a scenario with these tags qualify?
    pub fn takes(&self, tags: &[String]) -> bool {
        self.tags.is_empty() || self.tags.iter().any(|t| tags.contains(t))
    }
}

/// What every plan of a run shares.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// The backing of scenarios without a `backing` statement (`--backing`).
    pub backing: Option<Backing>,
    /// The fuse-overlayfs binary (`--fuse-overlayfs`).
    pub fuse_binary: Option<PathBuf>,
    /// `--layer-roundtrip`.
    pub roundtrip: bool,
    /// Instances that fail on purpose (`OVLC_FAULTS`).
    pub faults: Vec<(String, Fault)>,
    /// Record the upper after every step, as `ovlc explain` does (grading).
    pub explain: bool,
}

/// A run's plans, each with its target, in the run's order (instances, then
/// targets).
#[derive(Clone, Debug, Default)]
pub struct Planned {
    pub plans: Vec<(Plan, Target)>,
    /// Each plan's instance position in the whole run (partitions keep it).
    pub index: Vec<usize>,
    /// What each selected scenario is, for reports.
    pub scenarios: BTreeMap<String, ScenarioInfo>,
}

/// The target's name in reports and snapshots: a backing chosen for the run
/// (not by the scenario) is part of it (`vm:6.1+ext4`).
pub fn target_name(t: &Target, backing: Option<Backing>, scenario_declares_backing: bool) -> String {
    match backing {
        Some(b) if !scenario_declares_backing && b != Backing::Tmpfs => format!("{}+{}", t.name(), b.name()),
        _ => t.name(),
    }
}

/// One plan per selected instance and target.
pub fn build(
    library: &[(PathBuf, dsl::Scenario)],
    targets: &[TargetSpec],
    sel: &Selection,
    opts: &PlanOptions,
) -> Planned {
    let mut out = Planned::default();
    let mut index = 0;
    for (path, s) in library {
        if !sel.takes(&s.tags()) {
            continue;
        }
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for inst in dsl::instances(s) {
            index += 1;
            if let Some((k, n)) = sel.partition {
                if !in_partition(index - 1, k, n) {
                    continue;
                }
            }
            out.scenarios.entry(inst.scenario.clone()).or_insert_with(|| ScenarioInfo::of(s, path));
            for spec in targets {
                let backing = spec.backing.or(opts.backing);
                let plan = Plan {
                    scenario_dir: dir.clone(),
                    fuse_binary: opts.fuse_binary.clone(),
                    roundtrip: opts.roundtrip,
                    explain: opts.explain,
                    backing,
                    fault: opts.faults.iter().find(|(id, _)| *id == inst.id).map(|(_, f)| *f),
                    ..Plan::new(
                        inst.clone(),
                        s.clone(),
                        target_name(&spec.target, backing, s.declared_backing().is_some()),
                        spec.target.driver(),
                    )
                };
                out.plans.push((plan, spec.target.clone()));
                out.index.push(index - 1);
            }
        }
    }
    out
}

/// `ovlc explain`'s argument: a scenario file, or an id under `scenarios/`,
/// either with `[params]` naming one instance of a `vary`.
pub fn explain_path(arg: &str, is_file: impl Fn(&Path) -> bool) -> (PathBuf, Option<String>) {
    let (base, params) = match arg.split_once('[') {
        Some((b, p)) => (b.to_string(), Some(p.trim_end_matches(']').to_string())),
        None => (arg.to_string(), None),
    };
    let path = if is_file(Path::new(&base)) {
        PathBuf::from(&base)
    } else {
        Path::new("scenarios").join(format!("{base}.{}", crate::discover::EXT))
    };
    (path, params)
}

/// The instance `[params]` names, or the first.
pub fn pick_instance<'a>(instances: &'a [dsl::Instance], params: Option<&str>) -> Option<&'a dsl::Instance> {
    match params {
        Some(p) => instances.iter().find(|i| i.id.ends_with(&format!("[{p}]"))),
        None => instances.first(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(id: &str, text: &str) -> dsl::Scenario {
        dsl::parse("t.ovl", id, text.as_bytes()).unwrap_or_else(|e| panic!("{}", e.short()))
    }

    #[test]
    fn targets_carry_their_backing() {
        let t = parse_targets(&["vm:6.1/rootless+ext4".into(), "host".into(), "host".into()]).unwrap();
        assert_eq!(t.len(), 2, "repeats are dropped");
        assert_eq!(t[0].backing, Some(Backing::Ext4));
        assert_eq!(t[0].target.name(), "vm:6.1/rootless");
        assert_eq!(t[0].target.driver(), Driver::Rootless);
        assert_eq!(t[1].backing, None);
        assert!(parse_targets(&["vm:6.1+zfs".into()]).is_err());
        assert!(parse_targets(&["guest".into()]).is_err_and(|e| e.to_string().contains("unknown target guest")));
        assert!(parse_targets(&[" ".into()]).is_err_and(|e| e.to_string() == "no target given" && e.exit_code() == 2));
    }

    #[test]
    fn kernels_are_checked_against_the_catalog() {
        let t = parse_targets(&["vm:6.1".into(), "vm:custom".into(), "vm:4.19/fuse".into(), "host".into()]).unwrap();
        assert_eq!(unknown_kernel(&t, &["6.1", "7.3"]), Some("4.19"));
        assert_eq!(unknown_kernel(&t[..2], &["6.1"]), None);
        assert!(wants_custom_kernel(&t) && !wants_custom_kernel(&t[..1]));
    }

    #[test]
    fn partitions_are_round_robin() {
        assert_eq!(parse_partition("2/3").ok(), Some((2, 3)));
        assert!(parse_partition("0/3").is_err() && parse_partition("4/3").is_err() && parse_partition("x").is_err());
        let mine: Vec<usize> = (0..7).filter(|&i| in_partition(i, 2, 3)).collect();
        assert_eq!(mine, [1, 4]);
    }

    #[test]
    fn plans_cover_instances_times_targets_in_order() {
        let lib = vec![
            (
                PathBuf::from("s/a.ovl"),
                scenario("a", "scenario \"a\"\ntags x\nvary redirect_dir=on|off\nlayer l {\n    dir /d\n}\nmount l\n"),
            ),
            (
                PathBuf::from("s/b.ovl"),
                scenario("b", "scenario \"b\"\ntags y\nbacking ext4\nlayer l {\n    dir /d\n}\nmount l\n"),
            ),
        ];
        let targets = parse_targets(&["host".into(), "vm:6.1+xfs".into()]).unwrap();
        let opts = PlanOptions { faults: vec![("b".into(), Fault::Hang)], ..PlanOptions::default() };
        let p = build(&lib, &targets, &Selection::default(), &opts);
        let names: Vec<(String, String)> =
            p.plans.iter().map(|(pl, _)| (pl.instance.id.clone(), pl.target.clone())).collect();
        assert_eq!(names.len(), 6);
        assert_eq!(names[1].1, "vm:6.1+xfs", "a run's backing names the target");
        assert_eq!(names[5], ("b".to_string(), "vm:6.1".to_string()), "a scenario's own backing does not");
        assert_eq!(p.index, [0, 0, 1, 1, 2, 2]);
        assert_eq!(p.plans[4].0.fault, Some(Fault::Hang));
        assert_eq!(p.plans[0].0.scenario_dir, PathBuf::from("s"));
        assert_eq!(p.scenarios.len(), 2);
        // Tags and partitions select; positions stay those of the whole run.
        let tagged = build(&lib, &targets, &Selection { tags: vec!["y".into()], partition: None }, &opts);
        assert_eq!(tagged.plans.len(), 2);
        let part = build(&lib, &targets, &Selection { tags: vec![], partition: Some((2, 2)) }, &opts);
        assert_eq!(part.index, [1, 1]);
    }

    #[test]
    fn explain_finds_files_ids_and_instances() {
        let (p, params) = explain_path("lab/copy-up[opt=x]", |_| false);
        assert_eq!(p, PathBuf::from("scenarios/lab/copy-up.ovl"));
        assert_eq!(params.as_deref(), Some("opt=x"));
        assert_eq!(explain_path("my.ovl", |_| true), (PathBuf::from("my.ovl"), None));
    }
}
