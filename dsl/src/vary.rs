//! `vary` expansion: one instance per combination of values, with stable ids.

use serde::{Deserialize, Serialize};

use crate::ast::{Scenario, Stmt};

/// The most instances a scenario may have: `ovlc check` refuses a `vary`
/// whose axes multiply to more (`ovl::too-many-instances`).
pub const MAX_INSTANCES: usize = 4096;

/// One runnable instance of a scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `lab/copy-up`, or `lab/copy-up[index=on,metacopy=off]` when varied.
    pub id: String,
    /// The scenario's id, without parameters.
    pub scenario: String,
    /// `(name, value)` pairs appended to the options of every `mount`, in `vary` order.
    pub params: Vec<(String, String)>,
}

/// Every instance of a scenario, in a stable order: the first axis varies slowest,
/// values in the order written. A scenario without `vary` has one instance.
/// A parsed scenario has at most [`MAX_INSTANCES`].
pub fn instances(s: &Scenario) -> Vec<Instance> {
    let axes: Vec<(String, Vec<String>)> = s
        .body
        .items
        .iter()
        .filter_map(|i| match &i.node {
            Stmt::Vary(axes) => Some(axes),
            _ => None,
        })
        .flatten()
        .map(|a| (a.name.node.clone(), a.values.iter().map(|v| v.node.clone()).collect()))
        .collect();
    let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (name, values) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut c = prefix.clone();
                    c.push((name.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|params| Instance { id: instance_id(&s.id, &params), scenario: s.id.clone(), params })
        .collect()
}

/// `base[a=1,b=2]`, or `base` without parameters.
pub fn instance_id(base: &str, params: &[(String, String)]) -> String {
    if params.is_empty() {
        return base.to_string();
    }
    let p: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!("{base}[{}]", p.join(","))
}
