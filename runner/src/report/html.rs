//! The static HTML report: one self-contained `index.html` (no network at
//! view time) with a matrix of instances × targets grouped by area, filters,
//! a detail view per cell (steps, upper and merged trees, a diff against the
//! same instance on another target), the differences between kernels, and
//! benchmark results when given.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::Error;
use crate::model::{area, RunReport};

const PAGE: &str = include_str!("report.html");

/// The page's data, embedded as JSON.
pub fn data(report: &RunReport, bench: Option<&Value>) -> Value {
    let results: Vec<Value> = report
        .results
        .iter()
        .map(|o| {
            json!({
                "id": o.id, "scenario": o.scenario, "target": o.target, "status": o.status.name(),
                "reason": o.reason, "kernel": o.kernel, "backing": o.backing, "mount_api": o.mount_api,
                "millis": o.millis, "steps": o.steps, "failures": o.failures, "upper": o.upper,
                "merged": o.merged, "snapshot": o.snapshot, "area": area(&o.id),
            })
        })
        .collect();
    let diffs = super::differences::between_kernels(report);
    json!({
        "kernel": report.kernel,
        "partition": report.partition,
        "targets": report.targets,
        "summary": report.summary,
        "scenarios": report.scenarios,
        "results": results,
        "differences": diffs,
        "causes": super::differences::causes(&diffs),
        "matrix": super::matrix::built_in().ok().map(|(f, i)| super::matrix::with_interop(report, &f, &i)),
        "bench": bench,
    })
}

/// Writes `dir/index.html`.
pub fn write(report: &RunReport, bench: Option<&Value>, dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let text = serde_json::to_string(&data(report, bench)).map_err(|e| Error::Infrastructure(e.to_string()))?;
    // Inside <script>, "</" could end the element: JSON allows "<\/".
    let text = text.replace("</", "<\\/");
    let page = PAGE.replacen("__OVLC_DATA__", &text, 1);
    let path = dir.join("index.html");
    std::fs::write(&path, page).map_err(Error::io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_embeds_its_data_safely() {
        let o: crate::model::Outcome = serde_json::from_value(json!({
            "id": "lab/x", "scenario": "lab/x", "target": "host", "status": "pass", "kernel": "k",
            "steps": [], "failures": [], "millis": 1, "upper": "/a file 0644 0:0 size=9 \"</script>\"\n"
        }))
        .unwrap();
        let report = RunReport {
            version: 1,
            kernel: "k".into(),
            targets: vec!["host".into()],
            partition: None,
            repeat: None,
            summary: crate::model::Summary::of(std::slice::from_ref(&o)),
            scenarios: Default::default(),
            results: vec![o],
        };
        let dir = tempfile::tempdir().unwrap();
        write(&report, None, dir.path()).unwrap();
        let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert_eq!(page.matches("</script>").count(), PAGE.matches("</script>").count());
        assert!(page.contains(r#"\"<\/script>\""#));
        assert!(!page.contains("__OVLC_DATA__"));
        assert!(!page.contains("http://") && !page.contains("https://"), "the report loads nothing");
    }
}
