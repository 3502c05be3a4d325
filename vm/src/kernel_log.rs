//! What a kernel says when it is in trouble: the signatures of a bug report
//! (warning, BUG, oops, panic, sanitizer reports), read the same way from a
//! host's `/dev/kmsg` and from a guest's serial console.

/// Signatures of a kernel bug report.
pub const TROUBLE: &[&str] =
    &["WARNING:", "BUG:", "Oops", "Kernel panic", "general protection fault", "Call Trace:", "UBSAN:", "KASAN:"];

/// The lines of a log or console that report kernel trouble, trimmed.
pub fn trouble<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lines.into_iter().filter(|l| TROUBLE.iter().any(|s| l.contains(s))).map(|l| l.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_is_found_on_the_console() {
        let c = "[ 1.0] ok\n[ 2.0] WARNING: CPU: 0 PID: 1 at fs/overlayfs/copy_up.c:12\n[ 3.0] Kernel panic - not syncing: oops\n";
        assert_eq!(trouble(c.lines()).len(), 2);
        assert_eq!(trouble(["UBSAN: shift-out-of-bounds in fs/overlayfs/util.c"]).len(), 1);
        assert!(trouble(["overlayfs: upper fs does not support tmpfile."]).is_empty());
    }
}
