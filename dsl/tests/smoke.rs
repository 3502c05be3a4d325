#[test]
fn dsl_md_example_parses_and_formats() {
    let src = std::fs::read("tests/fixtures/dsl_example.ovl").unwrap();
    let s = match dsl::parse("dsl_example.ovl", "dsl_example", &src) {
        Ok(s) => s,
        Err(f) => panic!("{}", f.render(false, 100)),
    };
    let out = dsl::format(&s);
    println!("{out}");
    let again = dsl::parse("dsl_example.ovl", "dsl_example", out.as_bytes()).unwrap();
    assert_eq!(again, s);
    assert_eq!(dsl::format(&again), out);
}

#[test]
fn a_scenario_that_drops_the_caches_says_so_wherever_the_statement_is() {
    let parse = |head: &str, body: &str| {
        let text = format!("scenario \"d\"\n{head}layer l {{}}\nmount l\n{body}");
        dsl::parse("d.ovl", "d", text.as_bytes()).unwrap()
    };
    assert!(!parse("", "sync\n").drops_caches());
    assert!(parse("", "drop-caches\n").drops_caches());
    assert!(parse("param p=a|b\n", "if param p=a {\n    as 1:1 {\n        drop-caches\n    }\n}\n").drops_caches());
}
