//! Authoring and teaching as a user does it: `ovlc bless`, `ovlc exercise`,
//! `ovlc grade` on the host target (as root, as CI runs them), over the lab
//! and its exercises.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn ovlc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovlc"))
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse(path: &Path, source: &str) -> dsl::Scenario {
    dsl::parse(&path.display().to_string(), "t", source.as_bytes()).unwrap()
}

/// A copy of a lab directory's `.ovl` files (and the lab's tarball) in a
/// temporary directory.
fn copy_of(dir: &str) -> (tempfile::TempDir, Vec<(PathBuf, String)>) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("layers")).unwrap();
    std::fs::copy(repo().join("scenarios/lab/layers/rootfs.tar"), tmp.path().join("layers/rootfs.tar")).unwrap();
    let mut files = Vec::new();
    for e in std::fs::read_dir(repo().join(dir)).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ovl") {
            let to = tmp.path().join(p.file_name().unwrap());
            let body = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&to, &body).unwrap();
            files.push((to, body));
        }
    }
    files.sort();
    assert!(files.len() >= 10, "{dir}");
    (tmp, files)
}

fn bless(file: &Path, target: &str) -> Output {
    ovlc(&["bless", file.to_str().unwrap(), "--target", target, "--yes"])
}

/// The answer key of each lab exercise, blessed on the host: every `?` the
/// host reaches is answered; turned back into questions it is the exercise
/// again, byte for byte; and blessed again it is the same key, byte for byte.
#[test]
fn blessing_the_exercises_gives_answer_keys_that_round_trip_byte_for_byte() {
    let (_tmp, files) = copy_of("scenarios/lab/exercises");
    for (path, exercise) in &files {
        let out = bless(path, "host");
        let key = std::fs::read_to_string(path).unwrap();
        assert_ne!(&key, exercise, "{}: nothing blessed: {}", path.display(), text(&out.stderr));
        let left = key.lines().filter(|l| l.trim_end().ends_with(" ?")).count();
        // Only the rootless branch of the redirect exercise is not reached on the host.
        let expected_left = usize::from(path.ends_with("06-rename-dir-redirect.ovl"));
        assert_eq!(left, expected_left, "{}:\n{key}\n{}", path.display(), text(&out.stderr));
        assert_eq!(out.status.code(), Some(if expected_left > 0 { 1 } else { 0 }), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("+++ "), "the diff is shown: {}", text(&out.stdout));
        // Back to the exercise.
        let s = parse(path, &key);
        let reopened = runner::author::open_all("key", &key, &s, true).unwrap();
        assert_eq!(&reopened, exercise, "{}", path.display());
        // And blessed again: the same key.
        std::fs::write(path, &reopened).unwrap();
        bless(path, "host");
        assert_eq!(std::fs::read_to_string(path).unwrap(), key, "{}", path.display());
    }
}

/// Every lab step with its results removed (each `=> RESULT` made `=> ?`),
/// blessed on the host and then on host-rootless (which takes the rootless
/// branches), is the lab step again, byte for byte.
#[test]
fn blessing_the_lab_with_its_results_removed_gives_back_each_file_byte_for_byte() {
    let (_tmp, files) = copy_of("scenarios/lab");
    let mut opened = 0;
    for (path, original) in &files {
        let s = parse(path, original);
        let questions = runner::author::open_all("lab", original, &s, false).unwrap();
        if questions != *original {
            opened += 1;
        }
        std::fs::write(path, &questions).unwrap();
        bless(path, "host");
        bless(path, "host-rootless");
        assert_eq!(&std::fs::read_to_string(path).unwrap(), original, "{}", path.display());
    }
    assert!(opened >= 8, "only {opened} lab steps had results to remove");
}

#[test]
fn bless_shows_the_diff_and_writes_only_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.ovl");
    let body = "scenario \"s\"\n\nlayer a {\n    file /a \"a\"\n}\n\nmount a\nread /a => \"wrong\"\nunlink /a\nunlink /nope\nexpect upper ?\n";
    std::fs::write(&f, body).unwrap();
    // No terminal, no --yes: the diff, and nothing written.
    let out = ovlc(&["bless", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let diff = text(&out.stdout);
    assert!(diff.contains("-read /a => \"wrong\"\n"), "{diff}");
    assert!(diff.contains("+read /a => \"a\"\n"), "{diff}");
    assert!(diff.contains("+unlink /nope => ENOENT\n"), "{diff}");
    assert!(diff.contains("+expect upper {\n+    whiteout /a\n+}\n"), "{diff}");
    assert!(text(&out.stderr).contains("not written"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), body);
    // With --yes: written, canonical, and it passes.
    let out = ovlc(&["bless", f.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let blessed = std::fs::read_to_string(&f).unwrap();
    assert!(
        blessed.contains("read /a => \"a\"\nunlink /a\nunlink /nope => ENOENT\nexpect upper {\n    whiteout /a\n}\n"),
        "{blessed}"
    );
    let run = ovlc(&["run", "--snapshots", "ignore", "--target", "host", f.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stdout));
    let fmt = ovlc(&["fmt", "--check", f.to_str().unwrap()]);
    assert_eq!(fmt.status.code(), Some(0), "{}", text(&fmt.stdout));
    // Nothing left to bless.
    let again = ovlc(&["bless", f.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(0));
    assert!(text(&again.stderr).contains("nothing to bless"), "{}", text(&again.stderr));
}

#[test]
fn bless_names_what_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.ovl");
    let body = "scenario \"s\"\nvary redirect_dir=on|off\n\nlayer a {\n    file /a \"a\"\n}\n\nmount a\nif kernel < 4.0 {\n    read /a => ?\n}\nexpect merged {\n    file /a \"b\"\n}\n";
    std::fs::write(&f, body).unwrap();
    let out = ovlc(&["bless", f.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(":10: read /a => ?  left as it is: not reached on this target"), "{err}");
    assert!(err.contains(":12: expect merged  left as it is: the block does not hold"), "{err}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), body, "nothing to write, nothing written");
}

#[test]
fn exercise_prints_the_scenario_and_its_questions() {
    let out = ovlc(&["exercise", "scenarios/lab/exercises/03-whiteout.ovl"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(s.starts_with("Exercise: Deleting a lower file\n"), "{s}");
    assert!(s.contains("    21  unlink /var/log/old.log\n"), "{s}");
    assert!(s.contains("  1. line 22: read /var/log/old.log => ?  (what is the result?)"), "{s}");
    assert!(s.contains("  4. line 26: expect upper exactly ?  (which paths"), "{s}");
    assert!(s.contains("ovlc grade"), "{s}");
}

/// A student's answers: one right, one wrong, one right tree, one left open.
#[test]
fn grading_names_the_wrong_question_and_the_real_result() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("answers.ovl");
    let exercise = std::fs::read_to_string(repo().join("scenarios/lab/exercises/03-whiteout.ovl")).unwrap();
    let answers = exercise
        .replace("read /var/log/old.log => ?", "read /var/log/old.log => ENOENT")
        .replace("readdir /var/log => ?", "readdir /var/log => [keep.log, old.log]")
        .replace(
            "expect merged ?",
            "expect merged {\n    absent /var/log/old.log\n    file /var/log/keep.log \"keep\\n\"\n}",
        );
    assert_ne!(answers, exercise);
    std::fs::write(&f, &answers).unwrap();
    let out = ovlc(&["grade", f.to_str().unwrap(), "--target", "host"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains(" 1. line 22: read /var/log/old.log => ENOENT  -- right\n"), "{s}");
    assert!(
        s.contains(" 2. line 23: readdir /var/log => [keep.log, old.log]  -- WRONG\n      the kernel: [keep.log]\n"),
        "{s}"
    );
    assert!(s.contains("      system call: open(O_DIRECTORY) + getdents64"), "{s}");
    assert!(s.contains(" 3. line 25: expect merged  -- right\n"), "{s}");
    assert!(s.contains(" 4. line 29: expect upper exactly ?  -- not answered\n      the kernel: dir /var\n"), "{s}");
    assert!(s.contains("whiteout /var/log/old.log"), "{s}");
    assert!(s.ends_with("score: 2/4\n"), "{s}");
    // The answer key scores full marks.
    let key = dir.path().join("key.ovl");
    std::fs::write(&key, &exercise).unwrap();
    assert_eq!(bless(&key, "host").status.code(), Some(0));
    let out = ovlc(&["grade", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).ends_with("score: 4/4\n"), "{}", text(&out.stdout));
}

/// A wrong tree is explained: the checks that failed, the real tree, and
/// what the step changed in the upper.
#[test]
fn a_wrong_tree_says_which_checks_failed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("answers.ovl");
    let exercise = std::fs::read_to_string(repo().join("scenarios/lab/exercises/02-copy-up.ovl")).unwrap();
    let answers = exercise
        .replace("read /etc/hosts => ?", "read /etc/hosts => \"127.0.0.1 localhost\\n10.0.0.1 db\\n\"")
        .replace("expect upper exactly ?", "expect upper exactly {\n    file /etc/hosts \"10.0.0.1 db\\n\"\n}")
        .replace(
            "expect merged ?",
            "expect merged {\n    file /etc/hosts \"127.0.0.1 localhost\\n10.0.0.1 db\\n\"\n    file /etc/motd \"from top\\n\"\n    file /var/log/old.log size 4096\n}",
        );
    std::fs::write(&f, &answers).unwrap();
    let out = ovlc(&["grade", f.to_str().unwrap()]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("expect upper exactly  -- WRONG\n"), "{s}");
    assert!(s.contains("why: line "), "{s}");
    assert!(s.contains("content is \"127.0.0.1 localhost\\n10.0.0.1 db\\n\", expected \"10.0.0.1 db\\n\""), "{s}");
    assert!(
        s.contains("the kernel: dir /etc\n                  file /etc/hosts \"127.0.0.1 localhost\\n10.0.0.1 db\\n\""),
        "{s}"
    );
    assert!(s.ends_with("score: 2/3\n"), "{s}");
}

/// An answer about a tree names all of it, and an answer names one result:
/// `expect upper {}`, `=> any` and `=> error` are no answers.
#[test]
fn vague_answers_are_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("answers.ovl");
    let exercise = std::fs::read_to_string(repo().join("scenarios/lab/exercises/03-whiteout.ovl")).unwrap();
    let answers = exercise
        .replace("read /var/log/old.log => ?", "read /var/log/old.log => any")
        .replace("readdir /var/log => ?", "readdir /var/log => error")
        .replace("expect merged ?", "expect merged {}")
        .replace("expect upper exactly ?", "expect upper {\n    whiteout /var/log/old.log\n}");
    std::fs::write(&f, &answers).unwrap();
    let out = ovlc(&["grade", f.to_str().unwrap()]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("why: an answer names one result, not `any`, `error` or a set"), "{s}");
    assert!(s.contains(" 3. line 25: expect merged {}  -- WRONG"), "{s}");
    // The upper block names the whiteout; its parents are implied.
    assert!(s.contains(" 4. line 26: expect upper  -- right"), "{s}");
    assert!(s.ends_with("score: 1/4\n"), "{s}");
}

/// Statements on one line cannot be told apart by their line: refused.
#[test]
fn statements_sharing_a_line_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.ovl");
    let body = "scenario \"s\"\n\nlayer a {\n    file /a \"x\"\n}\n\nmount a\nif kernel < 3.0 { read /a => \"WRONG\" } else { read /a => \"x\" }\n";
    std::fs::write(&f, body).unwrap();
    let out = ovlc(&["grade", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("line 8: several statements on one line"), "{}", text(&out.stderr));
    std::fs::write(&f, body.replace("\"WRONG\"", "?").replace("\"x\" }", "? }")).unwrap();
    let out = ovlc(&["bless", f.to_str().unwrap(), "--yes"]);
    assert!(text(&out.stderr).contains("another statement is on this line"), "{}", text(&out.stderr));
}

/// bless never writes through a link planted at its temporary file's name,
/// and keeps a symlinked scenario a symlink.
#[test]
fn bless_writes_the_real_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.ovl");
    std::fs::write(&real, "scenario \"s\"\n\nlayer a {\n    file /a \"x\"\n}\n\nmount a\nread /a => ?\n").unwrap();
    let link = dir.path().join("link.ovl");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    for pid in 0..64 {
        let _ = std::os::unix::fs::symlink(&victim, dir.path().join(format!(".real.ovl.ovlc-fmt.{pid}")));
    }
    let out = ovlc(&["bless", link.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::read_to_string(&real).unwrap().contains("read /a => \"x\""));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    // A FIFO is no scenario file to rewrite.
    let fifo = dir.path().join("f.ovl");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = ovlc(&["bless", fifo.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not a regular file"), "{}", text(&out.stderr));
}
