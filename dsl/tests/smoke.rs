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
