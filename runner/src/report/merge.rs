//! Merging the JSON reports of a partitioned run into one.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{RunReport, Summary};
use crate::plan::parse_partition;

/// What a set of partition reports lacks: `None` when they are whole (or
/// no report is a partition), else a sentence naming the missing parts.
pub fn missing_partitions(reports: &[(String, RunReport)]) -> Option<String> {
    let parts: Vec<(usize, usize)> =
        reports.iter().filter_map(|(_, r)| r.partition.as_deref().and_then(|p| parse_partition(p).ok())).collect();
    let &(_, n) = parts.first()?;
    if parts.iter().any(|&(_, m)| m != n) {
        return Some("the reports come from runs split in different numbers of partitions".into());
    }
    let missing: Vec<String> =
        (1..=n).filter(|k| !parts.iter().any(|&(j, _)| j == *k)).map(|k| format!("{k}/{n}")).collect();
    let (word, verb) = if missing.len() == 1 { ("partition", "is") } else { ("partitions", "are") };
    (!missing.is_empty())
        .then(|| format!("{word} {} {verb} missing: the merged report covers part of the run", missing.join(", ")))
}

/// Merges the reports of a partitioned run into one: results in instance
/// order then target order, as one run would list them. The same instance
/// on the same target in two reports is an error.
pub fn merge(reports: Vec<(String, RunReport)>) -> Result<RunReport> {
    let mut targets: Vec<String> = Vec::new();
    let mut scenarios = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut results = Vec::new();
    let mut kernel = String::new();
    for (name, r) in reports {
        if r.version != 1 {
            return Err(Error::Usage(format!("{name}: report version {} (this ovlc reads version 1)", r.version)));
        }
        for t in &r.targets {
            if !targets.contains(t) {
                targets.push(t.clone());
            }
        }
        if kernel.is_empty() {
            kernel = r.kernel.clone();
        }
        scenarios.extend(r.scenarios);
        for o in &r.results {
            if !targets.contains(&o.target) {
                targets.push(o.target.clone());
            }
        }
        for o in r.results {
            if let Some(first) = seen.insert((o.id.clone(), o.target.clone()), name.clone()) {
                return Err(Error::Usage(format!("{} on {} is in both {first} and {name}", o.id, o.target)));
            }
            results.push(o);
        }
    }
    // The order of the run the partitions split: by instance position, then
    // target (reports without positions: by id).
    let order = |t: &str| targets.iter().position(|x| x == t).unwrap_or(usize::MAX);
    results.sort_by(|a, b| {
        a.index.cmp(&b.index).then_with(|| a.id.cmp(&b.id)).then(order(&a.target).cmp(&order(&b.target)))
    });
    Ok(RunReport {
        version: 1,
        kernel,
        summary: Summary::of(&results),
        targets,
        partition: None,
        scenarios,
        results,
        repeat: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_of_some_partitions_says_which_are_missing() {
        let r = |p: Option<&str>| {
            let mut doc = merge(vec![]).unwrap_or_else(|e| panic!("{e}"));
            doc.partition = p.map(str::to_string);
            ("f".to_string(), doc)
        };
        assert_eq!(missing_partitions(&[r(Some("1/3")), r(Some("2/3")), r(Some("3/3"))]), None);
        assert_eq!(missing_partitions(&[r(None), r(None)]), None);
        assert_eq!(
            missing_partitions(&[r(Some("1/3")), r(Some("3/3"))]).as_deref(),
            Some("partition 2/3 is missing: the merged report covers part of the run")
        );
        assert!(missing_partitions(&[r(Some("1/2")), r(Some("2/3"))]).is_some_and(|m| m.contains("different numbers")));
    }
}
