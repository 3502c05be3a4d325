//! The support matrix: for every feature of overlayfs.rst (docs/features.toml,
//! built in), what each VM target did with it in a run (supported, refused
//! with the errno and the kernel's words, skipped), the release the document
//! names beside what was measured, the behaviour scenarios whose results
//! differ between kernels, and each kernel's overlay module parameters.
//! Rendered as Markdown (the README's section) and shown in the HTML report.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::differences::{between_kernels, Difference};
use crate::model::{Outcome, RunReport, Status};
use crate::plan::{Target, TargetSpec};

/// docs/features.toml, the matrix's rows.
pub const FEATURES: &str = include_str!("../../../docs/features.toml");

/// A row: a feature and where the run says what became of it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub name: String,
    /// The section of overlayfs.rst that describes it.
    pub section: String,
    /// The release overlayfs.rst names for it, where it names one.
    #[serde(default)]
    pub since: Option<String>,
    /// The instance that probes it.
    pub probe: String,
    /// The step read: the first whose text starts with this.
    #[serde(default = "default_step")]
    pub step: String,
    /// The result that means supported.
    #[serde(default = "default_supported")]
    pub supported: String,
    /// Instances that check what it does.
    #[serde(default)]
    pub behaviour: Vec<String>,
}

fn default_step() -> String {
    "mount".into()
}

fn default_supported() -> String {
    "ok".into()
}

/// A driver-interoperability row: a scenario that hands an upper from one
/// driver to another and pins what the second reads.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Interop {
    /// The finding, in words.
    pub name: String,
    pub instance: String,
}

#[derive(Deserialize)]
struct Table {
    feature: Vec<Feature>,
    #[serde(default)]
    interop: Vec<Interop>,
}

/// The built-in rows: the features and the interoperability rows, read once.
pub fn built_in() -> Result<(Vec<Feature>, Vec<Interop>), toml::de::Error> {
    toml::from_str::<Table>(FEATURES).map(|t| (t.feature, t.interop))
}

/// What one target did with one feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// `yes`, an errno (`EINVAL`), another result, `skip`, `error`, or `-`
    /// (not in the run).
    pub word: String,
    /// The refusal's words (the kernel's log or fs context, fuse-overlayfs'
    /// stderr), or a skip's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// overlayfs.rst names a release and this kernel disagrees with it:
    /// supported before it, or refused from it on (the kernel driver only).
    pub disagrees: bool,
    /// Behaviour scenarios whose results on this kernel differ from the
    /// newest kernel's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differs: Vec<String>,
}

/// One driver's table: the kernels as columns, the features as rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriverTable {
    /// `vm:KERNEL`, `vm:KERNEL/fuse`, `vm:KERNEL/rootless`.
    pub family: String,
    /// Kernel labels, oldest first (`6.1 (ext4)` for a backing).
    pub kernels: Vec<String>,
    /// The target names of the columns.
    pub targets: Vec<String>,
    /// One row per feature, one cell per kernel.
    pub rows: Vec<Vec<Cell>>,
}

/// The whole matrix of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub features: Vec<Feature>,
    pub drivers: Vec<DriverTable>,
    /// The overlay module's parameters per kernel (the kernel driver's
    /// targets): parameter → kernel label → value.
    pub parameters: BTreeMap<String, BTreeMap<String, String>>,
    /// The kernels of `parameters`, oldest first.
    pub parameter_kernels: Vec<String>,
    /// Driver interoperability on the kernel driver's targets (whose
    /// instances mount with both drivers): each row's status per kernel.
    pub interop: Vec<(Interop, Vec<String>)>,
    /// The kernels of `interop`, oldest first, and their targets.
    pub interop_kernels: Vec<String>,
    pub interop_targets: Vec<String>,
}

/// `vm:6.1/rootless+ext4` → (`vm:KERNEL/rootless`, `6.1 (ext4)`, the
/// kernel's version): the differences' family and label, and the version
/// the release overlayfs.rst names is compared with.
fn column(target: &str) -> Option<(String, String, Vec<u64>)> {
    let (family, label) = super::differences::family_of(target)?;
    let Target::Vm(vm) = TargetSpec::parse(target).ok()?.target else { return None };
    Some((family, label, version_of(&vm.kernel)))
}

fn version_of(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).filter_map(|p| p.parse().ok()).collect()
}

/// The cell of `feature` in outcome `o` (its probe on one target).
fn cell(feature: &Feature, o: Option<&Outcome>, version: &[u64], kernel_driver: bool) -> Cell {
    let mut c = Cell { word: "-".into(), note: None, disagrees: false, differs: Vec::new() };
    let Some(o) = o else { return c };
    match o.status {
        Status::Skip => {
            c.word = "skip".into();
            c.note = o.reason.clone();
            return c;
        }
        Status::Error | Status::Crash | Status::Timeout => {
            c.word = o.status.name().into();
            c.note = o.reason.clone();
            return c;
        }
        Status::Pass | Status::Fail => {}
    }
    let Some(step) = o.steps.iter().find(|s| s.text.starts_with(&feature.step)) else {
        c.word = "not run".into();
        return c;
    };
    c.word = if step.result == feature.supported { "yes".into() } else { step.result.clone() };
    if c.word != "yes" {
        c.note = step.notes.first().map(|n| n.lines().last().unwrap_or(n).to_string());
    }
    if let (true, Some(since)) = (kernel_driver, &feature.since) {
        let from = version_of(since);
        let yes = c.word == "yes";
        c.disagrees = (version >= from.as_slice()) != yes;
    }
    c
}

/// The kernels on which the statuses or step results of `instance` in
/// `family` are not what the newest kernel gives. (Upper-tree lines are left
/// out: the upper root records `uuid` from 6.12 in every instance, which
/// would mark every feature.)
fn differing_kernels(diffs: &[Difference], instance: &str, family: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // A status told only by a skip (`requires kernel >= 6.6`) is no behaviour.
    let told = |d: &&Difference| {
        d.what.starts_with("line ") || (d.what == "status" && !d.values.iter().any(|(v, _)| v.starts_with("skip")))
    };
    for d in diffs.iter().filter(|d| d.instance == instance && d.family == family).filter(told) {
        let newest = d.values.iter().flat_map(|(_, ks)| ks.iter()).max_by_key(|k| version_of(k)).cloned();
        for (_, ks) in d.values.iter().filter(|(_, ks)| newest.as_ref().is_none_or(|n| !ks.contains(n))) {
            out.extend(ks.iter().cloned());
        }
    }
    out
}

/// The matrix of a run's VM targets.
pub fn matrix(report: &RunReport, features: &[Feature]) -> Matrix {
    with_interop(report, features, &[])
}

/// The matrix with its interoperability rows.
pub fn with_interop(report: &RunReport, features: &[Feature], interop: &[Interop]) -> Matrix {
    // Columns per family, in version order.
    let mut families: BTreeMap<String, Vec<(Vec<u64>, String, String)>> = BTreeMap::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for o in &report.results {
        if seen.insert(o.target.as_str()) {
            if let Some((family, label, version)) = column(&o.target) {
                families.entry(family).or_default().push((version, label, o.target.clone()));
            }
        }
    }
    let by: BTreeMap<(&str, &str), &Outcome> =
        report.results.iter().map(|o| ((o.id.as_str(), o.target.as_str()), o)).collect();
    let diffs = between_kernels(report);
    let mut drivers = Vec::new();
    // The kernel driver first, then fuse-overlayfs, then rootless.
    let order = |f: &str| match f {
        "vm:KERNEL" => 0,
        "vm:KERNEL/fuse" => 1,
        _ => 2,
    };
    let mut names: Vec<&String> = families.keys().collect();
    names.sort_by_key(|f| (order(f), (*f).clone()));
    for family in names {
        let mut cols = families[family].clone();
        cols.sort();
        // A target that ran none of the probes is no column (a scenario's own
        // backing names a target of its own: `vm:6.1/rootless` beside `+ext4`).
        cols.retain(|(_, _, t)| features.iter().any(|f| by.contains_key(&(f.probe.as_str(), t.as_str()))));
        let kernel_driver = family == "vm:KERNEL";
        let rows = features
            .iter()
            .map(|f| {
                let differing: Vec<(String, BTreeSet<String>)> =
                    f.behaviour.iter().map(|b| (b.clone(), differing_kernels(&diffs, b, family))).collect();
                cols.iter()
                    .map(|(v, label, target)| {
                        let mut c = cell(f, by.get(&(f.probe.as_str(), target.as_str())).copied(), v, kernel_driver);
                        c.differs =
                            differing.iter().filter(|(_, ks)| ks.contains(label)).map(|(b, _)| b.clone()).collect();
                        c
                    })
                    .collect()
            })
            .collect();
        drivers.push(DriverTable {
            family: family.clone(),
            kernels: cols.iter().map(|(_, l, _)| l.clone()).collect(),
            targets: cols.iter().map(|(_, _, t)| t.clone()).collect(),
            rows,
        });
    }
    let mut parameters: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut parameter_kernels: Vec<(Vec<u64>, String)> = Vec::new();
    for o in &report.results {
        let (Some(params), Some((family, label, version))) = (&o.module_params, column(&o.target)) else { continue };
        if family != "vm:KERNEL" || parameter_kernels.iter().any(|(_, l)| *l == label) {
            continue;
        }
        parameter_kernels.push((version, label.clone()));
        for (k, v) in params {
            parameters.entry(k.clone()).or_default().insert(label.clone(), v.clone());
        }
    }
    parameter_kernels.sort();
    let mut cols: Vec<(Vec<u64>, String, String)> = families.get("vm:KERNEL").cloned().unwrap_or_default();
    cols.sort();
    cols.retain(|(_, _, t)| interop.iter().any(|r| by.contains_key(&(r.instance.as_str(), t.as_str()))));
    let rows = interop
        .iter()
        .map(|r| {
            let cells = cols
                .iter()
                .map(|(_, _, t)| {
                    by.get(&(r.instance.as_str(), t.as_str())).map_or("-", |o| o.status.name()).to_string()
                })
                .collect();
            (r.clone(), cells)
        })
        .collect();
    Matrix {
        features: features.to_vec(),
        drivers,
        parameters,
        parameter_kernels: parameter_kernels.into_iter().map(|(_, l)| l).collect(),
        interop: rows,
        interop_kernels: cols.iter().map(|(_, l, _)| l.clone()).collect(),
        interop_targets: cols.into_iter().map(|(_, _, t)| t).collect(),
    }
}

fn driver_title(family: &str) -> &'static str {
    match family {
        "vm:KERNEL" => "The kernel driver (root)",
        "vm:KERNEL/fuse" => "fuse-overlayfs",
        _ => "The kernel driver, rootless (user namespace, `userxattr`)",
    }
}

/// The matrix as Markdown: a table per driver, the legend, the module
/// parameters.
pub fn markdown(m: &Matrix) -> String {
    let mut s = String::new();
    for d in &m.drivers {
        s.push_str(&format!("{} (`{}`):\n\n", driver_title(&d.family), d.family));
        s.push_str(&format!("| feature | overlayfs.rst | {} |\n", d.kernels.join(" | ")));
        s.push_str(&format!("|---|---|{}\n", "---|".repeat(d.kernels.len())));
        for (f, row) in m.features.iter().zip(&d.rows) {
            let since = f.since.as_ref().map_or(String::new(), |v| format!(", since {v}"));
            let cells: Vec<String> = row
                .iter()
                .map(|c| {
                    let mut w = c.word.clone();
                    if c.disagrees {
                        w.push_str(" (!)");
                    }
                    if !c.differs.is_empty() {
                        w.push_str(" *");
                    }
                    w
                })
                .collect();
            s.push_str(&format!("| {} | {}{since} | {} |\n", f.name, f.section, cells.join(" | ")));
        }
        s.push('\n');
    }
    s.push_str(
        "`yes`: the probe's mount (or step) succeeded; an errno: refused, with the kernel's words in \
         the JSON and HTML reports; `skip`: the probe cannot run there; `(!)`: overlayfs.rst names a \
         release and this kernel disagrees with it; `*`: a behaviour scenario of the feature gives \
         results on this kernel that differ from the newest kernel's (the differences below). \
         fuse-overlayfs ignores options it does not know (it says so on its standard error), so its \
         `yes` says that it mounted, not that it honours the option.\n",
    );
    if !m.interop.is_empty() && !m.interop_kernels.is_empty() {
        s.push_str(&format!(
            "\nDriver interoperability (an upper handed from one driver to another; `pass`: the finding holds):\n\n| finding | scenario | {} |\n|---|---|{}\n",
            m.interop_kernels.join(" | "),
            "---|".repeat(m.interop_kernels.len())
        ));
        for (r, cells) in &m.interop {
            s.push_str(&format!("| {} | {} | {} |\n", r.name, r.instance, cells.join(" | ")));
        }
    }
    if !m.parameters.is_empty() {
        s.push_str(&format!(
            "\nThe overlay module's parameters (`/sys/module/overlay/parameters`, Debian's defaults):\n\n| parameter | {} |\n|---|{}\n",
            m.parameter_kernels.join(" | "),
            "---|".repeat(m.parameter_kernels.len())
        ));
        for (p, by) in &m.parameters {
            let v: Vec<String> =
                m.parameter_kernels.iter().map(|k| by.get(k).map_or("-".to_string(), |v| format!("`{v}`"))).collect();
            s.push_str(&format!("| `{p}` | {} |\n", v.join(" | ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, target: &str, status: Status, step: &str, result: &str) -> Outcome {
        serde_json::from_value(serde_json::json!({
            "id": id, "scenario": id, "target": target, "status": status.name(), "kernel": "k",
            "steps": [{"line": 9, "text": step, "syscall": "", "result": result, "ok": true,
                       "notes": if result == "ok" { vec![] } else { vec!["kernel log: overlayfs: unrecognized mount option"] }}],
            "failures": [], "millis": 1
        }))
        .unwrap()
    }

    #[test]
    fn the_built_in_rows_parse_and_name_their_probes() {
        let (f, interop) = built_in().unwrap();
        assert!(interop.len() >= 2);
        assert!(f.len() >= 25, "{}", f.len());
        assert!(f.iter().all(|f| !f.probe.is_empty() && !f.section.is_empty()));
        let names: BTreeSet<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), f.len(), "names are unique");
    }

    #[test]
    fn cells_say_supported_refused_skipped_and_disagreement() {
        let f = Feature {
            name: "lowerdir+".into(),
            section: "Multiple lower layers".into(),
            since: Some("6.8".into()),
            probe: "probes/x".into(),
            step: "mount".into(),
            supported: "ok".into(),
            behaviour: vec!["b".into()],
        };
        let mut skipped = outcome("probes/x", "vm:6.12", Status::Skip, "mount a", "ok");
        skipped.reason = Some("requires kernel >= 6.5".into());
        let report = RunReport {
            version: 1,
            kernel: String::new(),
            targets: vec![],
            partition: None,
            repeat: None,
            summary: Default::default(),
            scenarios: Default::default(),
            results: vec![
                outcome("probes/x", "vm:5.10", Status::Pass, "mount a, b via append", "EINVAL"),
                outcome("probes/x", "vm:6.1", Status::Pass, "mount a, b via append", "ok"),
                skipped,
                outcome("probes/x", "vm:7.3", Status::Pass, "mount a, b via append", "ok"),
                outcome("probes/x", "vm:7.3/fuse", Status::Pass, "mount a, b via append", "EINVAL"),
                outcome("b", "vm:5.10", Status::Pass, "read /f", "\"old\""),
                outcome("b", "vm:6.1", Status::Pass, "read /f", "\"new\""),
                outcome("b", "vm:7.3", Status::Pass, "read /f", "\"new\""),
                outcome("probes/x", "host", Status::Pass, "mount a, b via append", "ok"),
            ],
        };
        let m = matrix(&report, &[f]);
        assert_eq!(m.drivers.len(), 2, "host targets are not columns");
        let k = &m.drivers[0];
        assert_eq!(k.family, "vm:KERNEL");
        assert_eq!(k.kernels, ["5.10", "6.1", "6.12", "7.3"]);
        let words: Vec<&str> = k.rows[0].iter().map(|c| c.word.as_str()).collect();
        assert_eq!(words, ["EINVAL", "yes", "skip", "yes"]);
        assert_eq!(k.rows[0][0].note.as_deref(), Some("kernel log: overlayfs: unrecognized mount option"));
        // Supported on 6.1, before the 6.8 the document names: flagged.
        assert!(!k.rows[0][0].disagrees && k.rows[0][1].disagrees && !k.rows[0][3].disagrees);
        // The behaviour scenario reads differently on 5.10 than on 7.3.
        assert_eq!(k.rows[0][0].differs, ["b"]);
        assert!(k.rows[0][1].differs.is_empty());
        // fuse-overlayfs: no disagreement flags (the document speaks of the kernel).
        assert_eq!(m.drivers[1].family, "vm:KERNEL/fuse");
        assert!(!m.drivers[1].rows[0][0].disagrees);
        let md = markdown(&m);
        assert!(
            md.contains("| lowerdir+ | Multiple lower layers, since 6.8 | EINVAL * | yes (!) | skip | yes |\n"),
            "{md}"
        );
    }
}
