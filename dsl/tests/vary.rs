//! `vary` expansion into instances.

#![allow(clippy::unwrap_used)]

fn parse(src: &str) -> dsl::Scenario {
    dsl::parse("features/index.ovl", "features/index", src.as_bytes())
        .unwrap_or_else(|f| panic!("{}", f.render(false, 100)))
}

const BODY: &str = "layer l {\n    file /a \"a\"\n}\nmount l\n";

#[test]
fn no_vary_gives_one_instance_with_the_scenario_id() {
    let s = parse(&format!("scenario \"x\"\n{BODY}"));
    let i = dsl::instances(&s);
    assert_eq!(i.len(), 1);
    assert_eq!(i[0].id, "features/index");
    assert!(i[0].params.is_empty());
}

#[test]
fn one_axis_gives_one_instance_per_value_in_order() {
    let s = parse(&format!("scenario \"x\"\nvary index=on|off\n{BODY}"));
    let ids: Vec<String> = dsl::instances(&s).into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["features/index[index=on]", "features/index[index=off]"]);
}

#[test]
fn axes_multiply_first_axis_slowest() {
    let s = parse(&format!("scenario \"x\"\nvary index=on|off, metacopy=on|off, xino=auto|on|off\n{BODY}"));
    let inst = dsl::instances(&s);
    assert_eq!(inst.len(), 12);
    assert_eq!(inst[0].id, "features/index[index=on,metacopy=on,xino=auto]");
    assert_eq!(inst[1].id, "features/index[index=on,metacopy=on,xino=on]");
    assert_eq!(inst[11].id, "features/index[index=off,metacopy=off,xino=off]");
    assert_eq!(
        inst[5].params,
        vec![("index".into(), "on".into()), ("metacopy".into(), "off".into()), ("xino".into(), "off".into())]
    );
    // Ids are unique and stable from one expansion to the next.
    let again = dsl::instances(&s);
    assert_eq!(inst, again);
    let mut ids: Vec<&str> = inst.iter().map(|i| i.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 12);
}

#[test]
fn instance_id_is_the_scenario_id_plus_parameters() {
    assert_eq!(dsl::vary::instance_id("lab/copy-up", &[("index".into(), "on".into())]), "lab/copy-up[index=on]");
    assert_eq!(dsl::vary::instance_id("lab/copy-up", &[]), "lab/copy-up");
}

fn values(name: &str, n: usize) -> String {
    format!("{name}={}", (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>().join("|"))
}

/// 40 two-valued axes in 387 bytes passed `check`, then `list` and `run`
/// died allocating 2^40 instances: the product of the axes is limited.
#[test]
fn the_instances_of_a_scenario_are_limited() {
    let axes: Vec<String> = (0..40).map(|i| format!("o{i}=a|b")).collect();
    let src = format!("scenario \"x\"\nvary {}\n{BODY}", axes.join(", "));
    let f = dsl::parse("features/index.ovl", "features/index", src.as_bytes()).unwrap_err();
    assert_eq!(f.diags.len(), 1, "{}", f.short());
    assert_eq!(f.diags[0].kind.code(), "ovl::too-many-instances");
    assert_eq!(f.diags[0].message, "`vary` makes 1099511627776 instances; a scenario may have 4096");
    assert!(f.short().starts_with("features/index.ovl:2:6: ovl::too-many-instances"), "{}", f.short());
    // As many as allowed: 2^12, or 16 x 256.
    for axes in [(0..12).map(|i| format!("o{i}=a|b")).collect::<Vec<_>>(), vec![values("a", 16), values("b", 256)]] {
        let s = parse(&format!("scenario \"x\"\nvary {}\n{BODY}", axes.join(", ")));
        assert_eq!(dsl::instances(&s).len(), dsl::MAX_INSTANCES);
    }
    // One more (17 x 241), or beyond what a u64 counts.
    let src = format!("scenario \"x\"\nvary {}, {}\n{BODY}", values("a", 17), values("b", 241));
    let f = dsl::parse("x.ovl", "x", src.as_bytes()).unwrap_err();
    assert_eq!(f.diags[0].message, "`vary` makes 4097 instances; a scenario may have 4096");
    let axes: Vec<String> = (0..70).map(|i| format!("o{i}=a|b")).collect();
    let src = format!("scenario \"x\"\nvary {}\n{BODY}", axes.join(", "));
    let f = dsl::parse("x.ovl", "x", src.as_bytes()).unwrap_err();
    assert_eq!(f.diags[0].message, "`vary` makes more than 2^64 instances; a scenario may have 4096");
}

#[test]
fn param_makes_instances_that_pass_nothing_to_mount() {
    let s = parse(&format!(
        "scenario \"x\"\nvary index=on|off\nparam layout=samefs|maxfs\n{BODY}if param layout=maxfs {{\n    read /a => \"a\"\n}}\n"
    ));
    let i = dsl::instances(&s);
    let ids: Vec<&str> = i.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "features/index[index=on,layout=samefs]",
            "features/index[index=on,layout=maxfs]",
            "features/index[index=off,layout=samefs]",
            "features/index[index=off,layout=maxfs]"
        ]
    );
    assert_eq!(i[1].params, [("index".to_string(), "on".to_string())], "vary's values go to mount");
    assert_eq!(i[1].layout, [("layout".to_string(), "maxfs".to_string())], "param's do not");
    assert!(dsl::format(&s).contains("vary index=on|off\nparam layout=samefs|maxfs\n"));
}

#[test]
fn param_follows_vary_and_names_its_own_axes() {
    let bad = |src: &str| {
        dsl::parse("p.ovl", "p", src.as_bytes()).unwrap_err().diags.iter().map(|d| d.kind.code()).collect::<Vec<_>>()
    };
    assert_eq!(bad(&format!("scenario \"x\"\nparam a=1|2\nvary index=on|off\n{BODY}")), ["ovl::header-order"]);
    assert_eq!(bad(&format!("scenario \"x\"\nvary a=1|2\nparam a=3|4\n{BODY}")), ["ovl::vary-conflict"]);
    let many = format!(
        "scenario \"x\"\nvary a=1|2|3|4|5|6|7|8\nparam b={}\n{BODY}",
        (0..600).map(|n| n.to_string()).collect::<Vec<_>>().join("|")
    );
    assert_eq!(bad(&many), ["ovl::too-many-instances"], "param axes count too");
}
