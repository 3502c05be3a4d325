//! Authoring and teaching: the places in a scenario where a result or a tree
//! is said (`=> RESULT`, `=> ?`, `expect TREE { ... }`, `expect TREE ?`),
//! `ovlc bless` (what the kernel did, written into the file through the
//! formatter), `ovlc exercise` (the questions) and `ovlc grade` (a student's
//! answers against a real run).

use dsl::ast::{Block, Expected, Item, Span, Stmt, TreeTarget};

use crate::model::{Outcome, Status, Step};

/// What a place says.
#[derive(Clone, Debug, PartialEq)]
pub enum Said {
    /// A step's result: `=> RESULT` (`None`: the statement says nothing, `ok`).
    Result(Option<Expected>),
    /// An `expect` block over a tree (upper, merged, work), or `?`.
    Tree { open: bool, target: TreeTarget },
}

/// A statement that says what a step does: one question of an exercise,
/// one place `ovlc bless` may write.
#[derive(Clone, Debug)]
pub struct Place {
    /// The statement's first line (steps are recorded by it).
    pub line: u32,
    /// The statement, formatted, on one line (blocks: their first line).
    pub text: String,
    pub said: Said,
    /// The statement's bytes in the file.
    pub span: Span,
    /// The result's bytes (`=> RESULT`), when it has one.
    pub result_span: Option<Span>,
    /// Another place starts on the same line: steps are recorded by line,
    /// so neither can be told apart (`bless` and `grade` refuse them).
    pub shared: bool,
}

impl Place {
    /// `=> ?` or `expect TREE ?`.
    pub fn is_open(&self) -> bool {
        matches!(self.said, Said::Result(Some(Expected::Open)) | Said::Tree { open: true, .. })
    }
}

/// Every place of a scenario that says a step's result or a tree, in the
/// file's order (inside `if`, `as` and `on` blocks too).
pub fn places(s: &dsl::Scenario) -> Vec<Place> {
    let mut out: Vec<Place> = s.all_items().into_iter().filter_map(place).collect();
    out.sort_by_key(|p| p.span.start);
    let lines: Vec<u32> = out.iter().map(|p| p.line).collect();
    for p in &mut out {
        p.shared = lines.iter().filter(|&&l| l == p.line).count() > 1;
    }
    out
}

/// What one statement says, if it says a result or a tree.
fn place(item: &Item<Stmt>) -> Option<Place> {
    let said = match &item.node {
        Stmt::Expect(e) => Said::Tree { open: e.open, target: e.target },
        st => Said::Result(said_result(st)?.map(|r| r.node.clone())),
    };
    let result_span = match &item.node {
        Stmt::Expect(_) => None,
        st => said_result(st).flatten().map(|r| r.span),
    };
    let first = dsl::format_stmt(&item.node).lines().next().unwrap_or_default().to_string();
    let text = first.trim().trim_end_matches('{').trim_end().to_string();
    Some(Place { line: item.span.line, text, said, span: item.span, result_span, shared: false })
}

/// The result of a statement that has one (`None` inside: it says nothing).
fn said_result(st: &Stmt) -> Option<Option<&dsl::ast::Outcome>> {
    match st {
        Stmt::Op(o) => Some(o.result.as_ref()),
        Stmt::Mount(m) => Some(m.result.as_ref()),
        Stmt::Umount(u) => Some(u.result.as_ref()),
        Stmt::Remount(r) => Some(r.as_ref()),
        Stmt::Reconfigure(r) => Some(r.result.as_ref()),
        _ => None,
    }
}

/// A statement that mounts (`mount`, `remount`, `reconfigure`) and says it
/// may be refused (an errno, `error`, `any`, `?`): the kernel log's words
/// are then its finding.
pub fn expects_refusal(s: &dsl::Scenario) -> bool {
    s.all_statements().into_iter().any(|st| {
        let result = match st {
            Stmt::Mount(m) => m.result.as_ref(),
            Stmt::Remount(r) => r.as_ref(),
            Stmt::Reconfigure(r) => r.result.as_ref(),
            _ => None,
        };
        result.is_some_and(|r| r.node != Expected::Ok)
    })
}

/// The steps every instance recorded for a line (one per instance that
/// reached it), with the outcome they belong to.
fn steps_at(outcomes: &[Outcome], line: u32) -> Vec<(&Outcome, &Step)> {
    let mut v = Vec::new();
    for o in outcomes {
        // The last step of a line: a mount records its kernel log's words after it.
        if let Some(s) = o.steps.iter().rev().find(|s| s.line == line) {
            v.push((o, s));
        }
    }
    v
}

/// What the kernel did at a place, agreed by every instance that got there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// In the language's words (a result, or a tree's checks one per line).
    Did(String),
    /// No instance ran the statement (an `if` branch not taken, a skip).
    NotReached,
    /// Instances (`vary`) did different things.
    Disagree(Vec<String>),
    /// It ran, but nothing can be written for it (a comparison that did not
    /// hold, a value too long to keep).
    Unsayable(String),
}

fn found(outcomes: &[Outcome], p: &Place) -> Found {
    let steps = steps_at(outcomes, p.line);
    if steps.is_empty() {
        return Found::NotReached;
    }
    let mut seen: Vec<String> = Vec::new();
    for (o, s) in &steps {
        match &s.got {
            Some(g) => {
                if !seen.contains(g) {
                    seen.push(g.clone());
                }
            }
            // Recorded only when open or wrong: an instance that passed did what the file says.
            None if s.ok && !p.is_open() => {
                let said = match &p.said {
                    Said::Result(Some(e)) => dsl::result_text(e),
                    Said::Result(None) => "ok".to_string(),
                    Said::Tree { .. } => "the block as written".to_string(),
                };
                if !seen.contains(&said) {
                    seen.push(said);
                }
            }
            None => {
                let why = s.notes.last().cloned().unwrap_or_else(|| s.result.clone());
                return Found::Unsayable(format!("{} on {}: {why}", o.id, o.target));
            }
        }
    }
    match seen.len() {
        0 => Found::NotReached,
        1 => Found::Did(seen.remove(0)),
        _ => Found::Disagree(seen),
    }
}

/// One place `bless` wrote, or could not.
#[derive(Clone, Debug)]
pub struct Blessed {
    pub line: u32,
    pub text: String,
    /// What it wrote, or why it did not.
    pub outcome: Result<String, String>,
}

/// The file after blessing, and what happened at each place.
#[derive(Clone, Debug)]
pub struct Blessing {
    pub text: String,
    pub places: Vec<Blessed>,
}

/// Writes what the run did into the scenario's text: the result of every
/// step whose result is `?` or does not hold (a step that says nothing and
/// fails gains one), and the checks of every `expect TREE ?`; then the whole
/// file goes through the formatter. `outcomes` are the file's instances on
/// one target. An `expect` block that does not hold is left for the author.
pub fn bless(name: &str, source: &str, s: &dsl::Scenario, outcomes: &[Outcome]) -> Result<Blessing, String> {
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut report = Vec::new();
    let errors: Vec<&Outcome> =
        outcomes.iter().filter(|o| matches!(o.status, Status::Error | Status::Crash | Status::Timeout)).collect();
    if let Some(o) = errors.first() {
        return Err(format!("{} on {}: {}: {}", o.id, o.target, o.status.name(), o.reason.as_deref().unwrap_or("")));
    }
    for p in places(s) {
        let steps = steps_at(outcomes, p.line);
        let wrong = steps.iter().any(|(_, st)| !st.ok);
        if !p.is_open() && !wrong {
            continue;
        }
        let outcome = match (&p.said, found(outcomes, &p)) {
            _ if p.shared => Err("another statement is on this line: give each its own line".into()),
            (Said::Tree { open: false, .. }, _) => {
                Err("the block does not hold; bless writes only `expect ... ?`".into())
            }
            (Said::Tree { target: TreeTarget::Work, .. }, _) => {
                Err("a work directory holds the kernel's temporary names, different on every mount".into())
            }
            (_, Found::NotReached) => Err("not reached on this target (an `if` branch, or a skipped instance)".into()),
            (_, Found::Disagree(v)) => Err(format!("the instances disagree: {}", v.join(" / "))),
            (_, Found::Unsayable(why)) => Err(format!("no result can say it: {why}")),
            (Said::Result(_), Found::Did(g)) => {
                let text = format!("=> {g}");
                let edit = match p.result_span {
                    Some(r) => (r.start, r.end, text.clone()),
                    None => (p.span.end, p.span.end, format!(" {text}")),
                };
                try_edit(name, &s.id, source, edit, &mut edits).map(|()| text)
            }
            (Said::Tree { open: true, .. }, Found::Did(g)) => {
                let stmt = source.get(p.span.start..p.span.end).unwrap_or_default();
                match stmt.rfind('?') {
                    Some(q) => {
                        let at = p.span.start + q;
                        let n = if g.is_empty() { 0 } else { g.lines().count() };
                        try_edit(name, &s.id, source, (at, at + 1, format!("{{\n{g}\n}}")), &mut edits)
                            .map(|()| format!("{n} check{}", if n == 1 { "" } else { "s" }))
                    }
                    None => Err("no `?` here".into()),
                }
            }
        };
        report.push(Blessed { line: p.line, text: p.text.clone(), outcome });
    }
    let text = apply(source, &edits);
    let again = dsl::parse(name, &s.id, text.as_bytes()).map_err(|f| f.short())?;
    Ok(Blessing { text: dsl::format(&again), places: report })
}

/// Keeps an edit when the file still checks with it alone; otherwise says
/// why it cannot be written (a result that makes later steps invalid, a
/// value past the language's limits).
fn try_edit(
    name: &str,
    id: &str,
    source: &str,
    edit: (usize, usize, String),
    edits: &mut Vec<(usize, usize, String)>,
) -> Result<(), String> {
    if edit.0 > edit.1 || edit.1 > source.len() || !source.is_char_boundary(edit.0) || !source.is_char_boundary(edit.1)
    {
        return Err("the file changed while it ran".into());
    }
    let alone = apply(source, std::slice::from_ref(&edit));
    match dsl::parse(name, id, alone.as_bytes()) {
        Ok(_) => {
            edits.push(edit);
            Ok(())
        }
        Err(f) => {
            let first = f.diags.first().map_or_else(String::new, |d| d.message.clone());
            Err(format!("written here, the file would not check: {first}"))
        }
    }
}

/// The source with the edits made (they do not overlap).
fn apply(source: &str, edits: &[(usize, usize, String)]) -> String {
    let mut sorted: Vec<&(usize, usize, String)> = edits.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut text = source.to_string();
    for (a, b, t) in sorted {
        text.replace_range(*a..*b, t);
    }
    text
}

/// A scenario with every said result (and with `trees`, every tree's
/// block) turned into a question (`=> ?`, `expect TREE ?`): the inverse of
/// `bless` for a file that `bless` wrote. For tests, and for making an
/// exercise of a scenario.
pub fn open_all(name: &str, source: &str, s: &dsl::Scenario, trees: bool) -> Result<String, String> {
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for p in places(s) {
        match (&p.said, p.result_span) {
            (Said::Result(Some(e)), Some(r)) if *e != Expected::Open => edits.push((r.start, r.end, "=> ?".into())),
            (Said::Tree { open: false, .. }, _) if trees => {
                let stmt = source.get(p.span.start..p.span.end).unwrap_or_default();
                if let Some(b) = stmt.find('{') {
                    edits.push((p.span.start + b, p.span.end, "?".into()));
                }
            }
            _ => {}
        }
    }
    let text = apply(source, &edits);
    let again = dsl::parse(name, &s.id, text.as_bytes()).map_err(|f| f.short())?;
    Ok(dsl::format(&again))
}

/// One question's grade.
#[derive(Clone, Debug)]
pub struct Graded {
    pub number: usize,
    pub line: u32,
    /// The statement with the student's answer.
    pub text: String,
    pub verdict: Verdict,
    /// What the kernel did, in the language's words (when wrong or open).
    pub real: Option<String>,
    /// Why the answer does not hold (the checks that failed).
    pub why: Vec<String>,
    /// `explain`'s words: the system call, and what changed in the upper.
    pub explain: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Right,
    Wrong,
    /// Still `?`.
    Unanswered,
    /// Not asked on this target (an `if` branch not taken).
    NotAsked,
}

/// A student's answers graded against a run of them: every place that says
/// a result or a tree is a question (an exercise gives what is not asked
/// without `=>`), in the file's order.
pub fn grade(s: &dsl::Scenario, outcomes: &[Outcome]) -> Result<Vec<Graded>, String> {
    let mut out = Vec::new();
    for (i, p) in places(s).into_iter().filter(|p| p.said != Said::Result(None)).enumerate() {
        if p.shared {
            return Err(format!("line {}: several statements on one line: give each its own line", p.line));
        }
        let steps = steps_at(outcomes, p.line);
        // An answer names one result: `any`, `error` and sets hold for several.
        let vague = matches!(&p.said, Said::Result(Some(Expected::Any | Expected::AnyError | Expected::OneOf(_))));
        let verdict = if steps.is_empty() {
            Verdict::NotAsked
        } else if p.is_open() {
            Verdict::Unanswered
        } else if steps.iter().all(|(_, s)| s.ok) && !vague {
            Verdict::Right
        } else {
            Verdict::Wrong
        };
        let (real, why, explain) = match verdict {
            Verdict::Wrong | Verdict::Unanswered => {
                let real = match found(outcomes, &p) {
                    Found::Did(g) => Some(g),
                    Found::Disagree(v) => Some(v.join(" / ")),
                    Found::Unsayable(w) => Some(w),
                    Found::NotReached => None,
                };
                let (o, st) = steps.iter().find(|(_, s)| !s.ok).unwrap_or(&steps[0]);
                let mut why = if verdict == Verdict::Wrong { st.notes.clone() } else { Vec::new() };
                if vague {
                    why.push("an answer names one result, not `any`, `error` or a set".into());
                }
                (real, why, explain_step(o, st))
            }
            _ => (None, Vec::new(), Vec::new()),
        };
        out.push(Graded { number: i + 1, line: p.line, text: p.text, verdict, real, why, explain });
    }
    Ok(out)
}

/// Every `expect` block over a tree made `exactly`: an answer about a tree
/// names all of it (parents implied), so `expect upper {}` is no answer.
pub fn strict(s: &mut dsl::Scenario) {
    fn walk(b: &mut Block<Stmt>) {
        for item in &mut b.items {
            match &mut item.node {
                Stmt::Expect(e) => e.exactly = true,
                Stmt::If(i) => {
                    for (_, body) in &mut i.branches {
                        walk(body);
                    }
                    if let Some(o) = &mut i.otherwise {
                        walk(o);
                    }
                }
                Stmt::As(a) => walk(&mut a.body),
                Stmt::On(o) => walk(&mut o.body),
                _ => {}
            }
        }
    }
    walk(&mut s.body);
}

/// What `ovlc explain` tells of one step: its system call, and what it
/// changed in the upper (when the run recorded the upper after each step).
fn explain_step(o: &Outcome, st: &Step) -> Vec<String> {
    let mut v = vec![format!("system call: {}", st.syscall)];
    let at = o.steps.iter().position(|x| std::ptr::eq(x, st)).unwrap_or(0);
    let before = o.steps[..at].iter().rev().find_map(|x| x.upper_after.clone()).unwrap_or_default();
    if let Some(after) = &st.upper_after {
        for c in crate::report::explain::changes(&before, after, &o.lower_paths) {
            v.push(format!("upper: {c}"));
        }
    }
    v
}

/// The score: right answers out of the questions asked on the target.
pub fn score(g: &[Graded]) -> (usize, usize) {
    let asked = g.iter().filter(|x| x.verdict != Verdict::NotAsked).count();
    (g.iter().filter(|x| x.verdict == Verdict::Right).count(), asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "scenario \"s\"\n\nlayer a {\n    file /a \"a\"\n}\n\nmount a\nread /a => ?\nunlink /b\nif kernel < 4.0 {\n    read /a => ?\n}\nexpect upper ?\n";

    fn scenario(text: &str) -> dsl::Scenario {
        dsl::parse("s.ovl", "s", text.as_bytes()).unwrap_or_else(|f| panic!("{}", f.short()))
    }

    fn outcome(steps: &[(u32, bool, Option<&str>)]) -> Outcome {
        let mut o: Outcome = serde_json::from_value(serde_json::json!({
            "id": "s", "scenario": "s", "target": "host", "status": "pass",
            "kernel": "6.1.0", "steps": [], "failures": [], "millis": 3
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        for (line, ok, got) in steps {
            o.steps.push(Step {
                line: *line,
                text: String::new(),
                syscall: "x".into(),
                result: String::new(),
                ok: *ok,
                notes: vec![],
                upper_after: None,
                got: got.map(str::to_string),
                mount: false,
            });
        }
        o
    }

    #[test]
    fn places_are_every_result_and_tree_in_file_order() {
        let p = places(&scenario(FILE));
        let lines: Vec<u32> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, [7, 8, 9, 11, 13]);
        assert!(p[1].is_open() && !p[2].is_open() && p[4].is_open());
        assert_eq!(p[4].text, "expect upper ?");
    }

    #[test]
    fn bless_writes_answers_and_failures_and_names_what_it_leaves() {
        let s = scenario(FILE);
        let o = outcome(&[
            (7, true, None),
            (8, true, Some("\"a\"")),
            (9, false, Some("ENOENT")),
            (13, true, Some("file /x \"1\"")),
        ]);
        let b = bless("s.ovl", FILE, &s, &[o]).unwrap_or_else(|e| panic!("{e}"));
        assert!(b.text.contains("read /a => \"a\"\nunlink /b => ENOENT\n"), "{}", b.text);
        assert!(b.text.contains("    read /a => ?\n"), "the branch not taken keeps its question: {}", b.text);
        assert!(b.text.ends_with("expect upper {\n    file /x \"1\"\n}\n"), "{}", b.text);
        let left: Vec<u32> = b.places.iter().filter(|p| p.outcome.is_err()).map(|p| p.line).collect();
        assert_eq!(left, [11]);
        // And back.
        let again = open_all("s.ovl", &b.text, &scenario(&b.text), true).unwrap_or_else(|e| panic!("{e}"));
        assert!(again.contains("read /a => ?\nunlink /b => ?\n") && again.ends_with("expect upper ?\n"), "{again}");
    }

    #[test]
    fn instances_that_disagree_are_not_blessed() {
        let s = scenario(FILE);
        let a = outcome(&[(8, true, Some("\"a\""))]);
        let b = outcome(&[(8, true, Some("\"b\""))]);
        let blessed = bless("s.ovl", FILE, &s, &[a, b]).unwrap_or_else(|e| panic!("{e}"));
        let p = blessed.places.iter().find(|p| p.line == 8).unwrap_or_else(|| panic!("no line 8"));
        assert_eq!(p.outcome, Err("the instances disagree: \"a\" / \"b\"".to_string()));
        assert!(blessed.text.contains("read /a => ?\n"));
    }

    #[test]
    fn grading_counts_right_wrong_open_and_not_asked() {
        let text = FILE.replace("mount a\nread /a => ?\nunlink", "mount a => ok\nread /a => \"b\"\nunlink");
        let s = scenario(&text);
        let o =
            outcome(&[(7, true, None), (8, false, Some("\"a\"")), (9, true, None), (13, true, Some("file /a \"a\""))]);
        let g = grade(&s, &[o]).unwrap_or_else(|e| panic!("{e}"));
        let v: Vec<Verdict> = g.iter().map(|g| g.verdict).collect();
        assert_eq!(v, [Verdict::Right, Verdict::Wrong, Verdict::NotAsked, Verdict::Unanswered]);
        assert_eq!(g[1].real.as_deref(), Some("\"a\""));
        assert_eq!(score(&g), (1, 3));
    }
}
