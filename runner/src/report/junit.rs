//! JUnit XML for CI systems: one `<testsuite>` per target, one `<testcase>`
//! per instance; a failed expectation or result is a `<failure>` with the
//! expected and actual values, a crash, hang or broken machinery an
//! `<error>` with its reason (the console excerpt for VMs), a skip a
//! `<skipped>` with its reason. The step log goes to `<system-out>`.

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

use crate::model::{area, Outcome, RunReport, Status, Summary};

/// XML 1.0 allows no control characters but tab, newline and carriage
/// return: console excerpts may carry escape sequences.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && !matches!(c, '\t' | '\n' | '\r') { '\u{fffd}' } else { c }).collect()
}

fn seconds(millis: u64) -> String {
    format!("{:.3}", millis as f64 / 1000.0)
}

/// The step log of an outcome, as plain text.
fn steps(o: &Outcome) -> String {
    let mut s = format!("kernel {}", o.kernel);
    if let Some(b) = &o.backing {
        s.push_str(&format!(", backing {b}"));
    }
    if let Some(m) = &o.mount_api {
        s.push_str(&format!(", {m}"));
    }
    s.push('\n');
    for st in &o.steps {
        s.push_str(&format!(
            "{:>4} {} => {}{}\n",
            st.line,
            st.text,
            st.result,
            if st.ok { "" } else { "  (unexpected)" }
        ));
    }
    if let Some(u) = &o.upper {
        s.push_str("upper:\n");
        s.push_str(u);
    }
    s
}

/// The JUnit document of a run.
pub fn write(report: &RunReport) -> std::io::Result<Vec<u8>> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let all = &report.summary;
    let total_ms: u64 = report.results.iter().map(|o| o.millis).sum();
    w.create_element("testsuites")
        .with_attributes([
            ("name", "ovlc"),
            ("tests", report.results.len().to_string().as_str()),
            ("failures", all.failed.to_string().as_str()),
            ("errors", (all.errors + all.crashed + all.timed_out).to_string().as_str()),
            ("skipped", all.skipped.to_string().as_str()),
            ("time", seconds(total_ms).as_str()),
        ])
        .write_inner_content(|w| {
            let mut targets: Vec<&str> = Vec::new();
            for o in &report.results {
                if !targets.contains(&o.target.as_str()) {
                    targets.push(&o.target);
                }
            }
            for (n, target) in targets.iter().enumerate() {
                let cases: Vec<&Outcome> = report.results.iter().filter(|o| o.target == *target).collect();
                let s = Summary::of(cases.iter().copied());
                let kernel = cases.first().map(|o| o.kernel.clone()).unwrap_or_default();
                w.create_element("testsuite")
                    .with_attributes([
                        ("name", *target),
                        ("id", n.to_string().as_str()),
                        ("tests", cases.len().to_string().as_str()),
                        ("failures", s.failed.to_string().as_str()),
                        ("errors", (s.errors + s.crashed + s.timed_out).to_string().as_str()),
                        ("skipped", s.skipped.to_string().as_str()),
                        ("time", seconds(cases.iter().map(|o| o.millis).sum()).as_str()),
                    ])
                    .write_inner_content(|w| {
                        w.create_element("properties").write_inner_content(|w| {
                            w.create_element("property")
                                .with_attributes([("name", "kernel"), ("value", clean(&kernel).as_str())])
                                .write_empty()?;
                            Ok(())
                        })?;
                        for o in &cases {
                            testcase(w, o)?;
                        }
                        Ok(())
                    })?;
            }
            Ok(())
        })?;
    let mut out = w.into_inner();
    out.push(b'\n');
    Ok(out)
}

fn testcase(w: &mut Writer<Vec<u8>>, o: &Outcome) -> std::io::Result<()> {
    w.create_element("testcase")
        .with_attributes([
            ("name", clean(&o.id).as_str()),
            ("classname", clean(&format!("{}.{}", o.target, area(&o.id))).as_str()),
            ("time", seconds(o.millis).as_str()),
        ])
        .write_inner_content(|w| {
            let reason = clean(o.reason.as_deref().unwrap_or(""));
            let first_line = reason.lines().next().unwrap_or("").to_string();
            match o.status {
                Status::Pass => {}
                Status::Skip => {
                    w.create_element("skipped").with_attribute(("message", reason.as_str())).write_empty()?;
                }
                Status::Fail => {
                    for f in &o.failures {
                        let message = if f.line > 0 { format!("line {}: {}", f.line, f.step) } else { f.step.clone() };
                        let text = format!("expected: {}\nactual:   {}", f.expected, f.actual);
                        w.create_element("failure")
                            .with_attributes([("message", clean(&message).as_str()), ("type", "fail")])
                            .write_text_content(BytesText::new(&clean(&text)))?;
                    }
                }
                Status::Error | Status::Crash | Status::Timeout => {
                    w.create_element("error")
                        .with_attributes([("message", first_line.as_str()), ("type", o.status.name())])
                        .write_text_content(BytesText::new(&reason))?;
                }
            }
            w.create_element("system-out").write_text_content(BytesText::new(&clean(&steps(o))))?;
            Ok(())
        })?;
    Ok(())
}
