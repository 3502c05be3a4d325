//! The wire protocol between the host and the guest agent: framed lines on
//! the serial console, each result with the SHA-256 of its JSON so that
//! kernel noise interleaved with a frame is never mistaken for a result.

use crate::model::Outcome;

/// Console frames: `OVLC-START <n> <ms>` before instance n (with the guest's
/// own clock: milliseconds since its kernel booted), `OVLC-RESULT <sha256>
/// <json>` after it, `OVLC-DONE` at the end.
pub const START: &str = "OVLC-START ";
pub const RESULT: &str = "OVLC-RESULT ";
pub const DONE: &str = "OVLC-DONE";
/// `OVLC-BENCH <sha256> <json>`: one driver's measurements; `OVLC-BENCH-ERROR <driver> <why>`.
pub const BENCH: &str = "OVLC-BENCH ";
pub const BENCH_ERROR: &str = "OVLC-BENCH-ERROR ";

/// The checksum of a frame's JSON.
fn sha(s: &str) -> String {
    vm::debian::sha256_hex(s.as_bytes())
}

/// A result frame: `OVLC-RESULT <sha256> <json>` (or `OVLC-BENCH ...` with `BENCH`).
pub fn frame(prefix: &str, json: &str) -> String {
    format!("{prefix}{} {json}", sha(json))
}

/// The kernel command line word that lists the scratch disks, in order:
/// `ovlc.disks=ext4,xfs` (`/dev/vda` holds ext4, `/dev/vdb` xfs).
pub const DISKS_WORD: &str = "ovlc.disks=";

/// The JSON of a frame line (`PREFIX<sha256> <json>`) whose checksum holds.
pub fn unframe<'a>(prefix: &str, line: &'a str) -> Option<&'a str> {
    let (sum, json) = line.trim_start_matches(|c: char| c.is_control()).strip_prefix(prefix)?.split_once(' ')?;
    (sha(json) == sum).then_some(json)
}

/// Reads the framed results off a console; a frame whose checksum fails is dropped.
pub fn parse_console(console: &str) -> (Vec<(usize, Outcome)>, Option<usize>, bool) {
    let mut results = Vec::new();
    let mut current = None;
    let mut done = false;
    for line in console.lines() {
        let line = line.trim_start_matches(|c: char| c.is_control());
        if let Some((n, _)) = start_frame(line) {
            current = Some(n);
        } else if let Some(json) = unframe(RESULT, line) {
            if let (Some(i), Ok(o)) = (current, serde_json::from_str::<Outcome>(json)) {
                results.push((i, o));
                current = None;
            }
        } else if line.starts_with(DONE) {
            done = true;
        }
    }
    (results, current, done)
}

/// An `OVLC-START <n> <ms>` frame: the instance and, when the guest sent it,
/// its clock.
pub fn start_frame(line: &str) -> Option<(usize, Option<u64>)> {
    let mut words = line.trim_start_matches(|c: char| c.is_control()).strip_prefix(START)?.split_whitespace();
    let n = words.next()?.parse().ok()?;
    Some((n, words.next().and_then(|t| t.parse().ok())))
}

/// When each instance started by the guest's clock (ms since its kernel
/// booted), in console order: what a batch costs per instance without the
/// console's polling in the measure.
pub fn start_times(console: &str) -> Vec<(usize, u64)> {
    console.lines().filter_map(start_frame).filter_map(|(n, t)| Some((n, t?))).collect()
}

/// The guest's memory in use (MemTotal - MemAvailable, KiB) as `OVLC-DONE` reports it.
pub fn memory_used_kib(console: &str) -> Option<u64> {
    console.lines().find_map(|l| {
        l.trim_start_matches(|c: char| c.is_control())
            .strip_prefix(DONE)?
            .trim()
            .strip_prefix("mem_used_kib=")?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_only_whole() {
        let f = frame(BENCH, r#"[{"a":1}]"#);
        assert_eq!(unframe(BENCH, &f), Some(r#"[{"a":1}]"#));
        assert_eq!(unframe(BENCH, &format!("\r\u{1b}{f}")), Some(r#"[{"a":1}]"#), "terminal noise before it");
        assert_eq!(unframe(RESULT, &f), None, "another kind of frame");
        assert_eq!(unframe(BENCH, &f[..f.len() - 1]), None, "cut short");
        assert_eq!(unframe(BENCH, "OVLC-BENCH nonsense"), None);
    }

    #[test]
    fn memory_comes_back_from_the_done_frame() {
        assert_eq!(memory_used_kib("x\n\u{1b}OVLC-DONE mem_used_kib=31744\n"), Some(31744));
        assert_eq!(memory_used_kib("OVLC-DONE\n"), None);
    }

    #[test]
    fn console_frames_survive_kernel_noise_and_reject_corruption() {
        let o = r#"{"id":"a","scenario":"a","target":"vm:1","status":"pass","kernel":"k","steps":[],"failures":[],"millis":1}"#;
        let console = format!(
            "[ 0.1] boot\n{START}0 2100\n[ 1.0] noise\n{RESULT}{} {o}\n{START}1 2130\n{RESULT}{} {o}\n{START}2\n",
            sha(o),
            "0".repeat(64)
        );
        let (r, running, done) = parse_console(&console);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, 0);
        assert_eq!(running, Some(2));
        assert!(!done);
        // The guest's clock, where the frame has it.
        assert_eq!(start_times(&console), [(0, 2100), (1, 2130)]);
        assert_eq!(start_frame("OVLC-START 7"), Some((7, None)));
        assert_eq!(start_frame("OVLC-START x 1"), None);
    }
}
