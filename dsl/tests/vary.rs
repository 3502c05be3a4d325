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
