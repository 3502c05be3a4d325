//! `ovlc explain`: a run told step by step, for lab use: each statement, its
//! system call and result, and what changed in the upper layer, in words.

use std::collections::BTreeMap;

use crate::exec::{Outcome, Status};

/// The path and the rest of a canonical tree line.
fn split_line(line: &str) -> (String, String) {
    if let Some(rest) = line.strip_prefix('"') {
        // A quoted path: find the closing quote that is not escaped.
        let mut esc = false;
        for (i, c) in rest.char_indices() {
            match c {
                '\\' if !esc => esc = true,
                '"' if !esc => return (format!("\"{}\"", &rest[..i]), rest[i + 1..].trim_start().to_string()),
                _ => esc = false,
            }
        }
    }
    match line.split_once(' ') {
        Some((p, r)) => (p.to_string(), r.to_string()),
        None => (line.to_string(), String::new()),
    }
}

fn parse(tree: &str) -> BTreeMap<String, String> {
    tree.lines().map(split_line).collect()
}

fn kind_of(rest: &str) -> &str {
    rest.split(' ').next().unwrap_or("")
}

fn words(rest: &str) -> Vec<&str> {
    rest.split(' ').collect()
}

/// What changed between two upper trees, one sentence per change.
pub fn changes(before: &str, after: &str, lower_paths: &[String]) -> Vec<String> {
    let a = parse(before);
    let b = parse(after);
    let mut out = Vec::new();
    for (p, rest) in &b {
        let kind = kind_of(rest);
        match a.get(p) {
            None => {
                let w = words(rest);
                if kind == "whiteout" {
                    out.push(format!("whiteout for {p}: the lower {p} is hidden"));
                } else if w.contains(&"opaque") {
                    out.push(format!("opaque dir {p}: created, hiding every lower entry below it"));
                } else if lower_paths.contains(p) {
                    out.push(format!("copy-up of {p} ({kind}) from a lower layer"));
                } else {
                    out.push(format!("new {kind} {p} in the upper"));
                }
                for x in w.iter().filter(|x| x.starts_with("redirect=")) {
                    out.push(format!("{p} carries {x}: it stands for a lower directory of that name"));
                }
            }
            Some(old) if old != rest => {
                let (ow, nw) = (words(old), words(rest));
                if kind_of(old) != kind {
                    out.push(format!("{p} is now a {kind} (was a {})", kind_of(old)));
                    continue;
                }
                let added: Vec<&&str> = nw.iter().filter(|w| !ow.contains(w)).collect();
                let removed: Vec<&&str> = ow.iter().filter(|w| !nw.contains(w)).collect();
                let xattrs: Vec<String> = added.iter().filter(|w| w.starts_with("xattr:")).map(|w| w.trim_start_matches("xattr:").to_string()).collect();
                if !xattrs.is_empty() {
                    out.push(format!("xattrs added on {p}: {}", xattrs.join(", ")));
                }
                let other: Vec<String> = added.iter().filter(|w| !w.starts_with("xattr:")).map(|w| w.to_string()).collect();
                if !other.is_empty() || !removed.is_empty() {
                    out.push(format!(
                        "{p} changed: {} -> {}",
                        removed.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(" "),
                        other.join(" ")
                    ));
                }
            }
            _ => {}
        }
    }
    for p in a.keys() {
        if !b.contains_key(p) {
            out.push(format!("{p} removed from the upper"));
        }
    }
    out
}

/// The whole narration.
pub fn narrate(o: &Outcome) -> String {
    let mut s = format!("{} on {} (kernel {})\n", o.id, o.target, o.kernel);
    if o.status == Status::Skip || o.status == Status::Error {
        s.push_str(&format!("{}: {}\n", o.status.name(), o.reason.as_deref().unwrap_or("")));
        return s;
    }
    let mut before = String::new();
    for st in &o.steps {
        s.push_str(&format!("\nline {}: {}\n", st.line, st.text));
        s.push_str(&format!("  system call: {}\n", st.syscall));
        s.push_str(&format!("  result: {}{}\n", st.result, if st.ok { "" } else { "  <-- not as expected" }));
        for n in &st.notes {
            for l in n.lines() {
                s.push_str(&format!("  note: {l}\n"));
            }
        }
        if let Some(after) = &st.upper_after {
            let ch = changes(&before, after, &o.lower_paths);
            if before.is_empty() && !after.is_empty() && ch.iter().all(|c| c.contains(" / ") || c.starts_with("new dir /")) {
                s.push_str("  upper: created empty\n");
            }
            for c in ch.iter().filter(|c| !c.starts_with("new dir / ")) {
                s.push_str(&format!("  upper: {c}\n"));
            }
            before = after.clone();
        }
    }
    s.push_str(&format!(
        "\nresult: {}{}\n",
        o.status.name(),
        if o.failures.is_empty() { String::new() } else { format!(" ({} failure(s))", o.failures.len()) }
    ));
    if let Some(u) = &o.upper {
        s.push_str("\nfinal upper tree:\n");
        for l in u.lines() {
            s.push_str(&format!("  {l}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::changes;

    #[test]
    fn changes_are_told_in_words() {
        let before = "/ dir 0755 0:0\n";
        let after = "/ dir 0755 0:0\n/etc dir 0755 0:0 impure\n/etc/hosts file 0644 0:0 size=3 \"ab\\n\"\n/old whiteout\n/srv dir 0755 0:0 opaque\n/new file 0644 0:0 size=0\n";
        let lower = vec!["/etc".to_string(), "/etc/hosts".to_string()];
        let c = changes(before, after, &lower);
        assert!(c.contains(&"copy-up of /etc/hosts (file) from a lower layer".to_string()), "{c:?}");
        assert!(c.contains(&"whiteout for /old: the lower /old is hidden".to_string()), "{c:?}");
        assert!(c.iter().any(|x| x.starts_with("opaque dir /srv")), "{c:?}");
        assert!(c.contains(&"new file /new in the upper".to_string()), "{c:?}");
        let later = after.replace("size=3 \"ab\\n\"", "size=3 \"ab\\n\" xattr:user.k=\"v\"");
        let c = changes(after, &later, &lower);
        assert_eq!(c, vec!["xattrs added on /etc/hosts: user.k=\"v\"".to_string()]);
    }
}
