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
    /// `(name, value)` pairs of `param`: the instance's layout, passed to no mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layout: Vec<(String, String)>,
}

/// Every instance of a scenario, in a stable order: the first axis varies slowest
/// (`vary` axes, then `param` axes), values in the order written. A scenario
/// without `vary` or `param` has one instance. A parsed scenario has at most
/// [`MAX_INSTANCES`].
pub fn instances(s: &Scenario) -> Vec<Instance> {
    let axes_of = |param: bool| {
        s.body
            .items
            .iter()
            .filter_map(move |i| match &i.node {
                Stmt::Vary(axes) if !param => Some(axes),
                Stmt::Param(axes) if param => Some(axes),
                _ => None,
            })
            .flatten()
            .map(|a| (a.name.node.clone(), a.values.iter().map(|v| v.node.clone()).collect::<Vec<_>>()))
    };
    let varied = axes_of(false).count();
    let axes: Vec<(String, Vec<String>)> = axes_of(false).chain(axes_of(true)).collect();
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
        .map(|mut params| {
            let id = instance_id(&s.id, &params);
            let layout = params.split_off(varied.min(params.len()));
            Instance { id, scenario: s.id.clone(), params, layout }
        })
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
