//! `ovlc explain`: a run told step by step, for lab use: each statement, its
//! system call and result, and what changed in the upper layer, in words.

use std::collections::BTreeMap;

use crate::model::{Outcome, Status};

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
        let w = words(rest);
        match a.get(p) {
            None if p == "/" => {}
            None => {
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
                    out.push(format!("{p} carries {x}: it stands for the lower directory of that name"));
                }
            }
            Some(old) if old != rest => {
                let ow = words(old);
                if kind_of(old) != kind {
                    if kind == "whiteout" {
                        out.push(format!(
                            "whiteout for {p}: replaces the {} in the upper and hides the lower {p}",
                            kind_of(old)
                        ));
                    } else if w.contains(&"opaque") {
                        out.push(format!(
                            "opaque dir {p}: replaces the {}, hiding every lower entry below it",
                            kind_of(old)
                        ));
                    } else {
                        out.push(format!("{p} is now a {kind} (was a {})", kind_of(old)));
                    }
                    continue;
                }
                let added: Vec<&&str> = w.iter().filter(|x| !ow.contains(x)).collect();
                let removed: Vec<&&str> = ow.iter().filter(|x| !w.contains(x)).collect();
                let xattrs: Vec<String> = added
                    .iter()
                    .filter(|x| x.starts_with("xattr:"))
                    .map(|x| x.trim_start_matches("xattr:").to_string())
                    .collect();
                if !xattrs.is_empty() {
                    out.push(format!("xattrs added on {p}: {}", xattrs.join(", ")));
                }
                let gone: Vec<String> = removed
                    .iter()
                    .filter(|x| x.starts_with("xattr:"))
                    .map(|x| x.trim_start_matches("xattr:").to_string())
                    .collect();
                if !gone.is_empty() {
                    out.push(format!("xattrs removed from {p}: {}", gone.join(", ")));
                }
                let now: Vec<String> =
                    added.iter().filter(|x| !x.starts_with("xattr:")).map(|x| x.to_string()).collect();
                let was: Vec<String> =
                    removed.iter().filter(|x| !x.starts_with("xattr:")).map(|x| x.to_string()).collect();
                match (now.is_empty(), was.is_empty()) {
                    (true, true) => {}
                    (false, true) => out.push(format!("{p} now has {}", now.join(" "))),
                    (true, false) => out.push(format!("{p} no longer has {}", was.join(" "))),
                    (false, false) => out.push(format!("{p}: {} (was {})", now.join(" "), was.join(" "))),
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
            if before.is_empty() && !after.is_empty() {
                s.push_str("  upper: the upper directory is in use\n");
            }
            for c in changes(&before, after, &o.lower_paths) {
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
