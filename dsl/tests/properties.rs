//! Property tests: hostile input never panics, and the formatter is faithful.
//!
//! Case counts default to proptest's 256; CI raises them with `PROPTEST_CASES`
//! for a bounded fuzzing run.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

mod common;

use common::Gen;

impl Gen {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    /// Optional padding between tokens.
    fn sp(&mut self) -> &'static str {
        ["", " ", "  ", "\t"][self.below(4)]
    }
    fn string(&mut self) -> String {
        let pieces =
            ["a", "hello", " ", "\\n", "\\t", "\\\\", "\\\"", "\\x00", "\\xff", "é", "日本", "#", "{", "}", "=>", ","];
        let n = self.below(5);
        let s: String = (0..n).map(|_| self.pick(&pieces)).collect();
        format!("\"{s}\"")
    }
    /// A symbolic link target a layer can hold: not empty, no NUL.
    fn target(&mut self) -> String {
        loop {
            let s = self.string();
            if s != "\"\"" && !s.contains("\\x00") {
                return s;
            }
        }
    }
    fn path(&mut self) -> String {
        let names = ["etc", "a", "b", "motd", "x.log", "dir-1", "name_2", "ünï"];
        let depth = 1 + self.below(3);
        let mut p = String::new();
        for _ in 0..depth {
            p.push('/');
            p.push_str(self.pick(&names));
        }
        if self.chance(10) {
            format!("\"{p} with space\"")
        } else {
            p
        }
    }
    /// An operation's path: sometimes with a trailing `/`.
    fn op_path(&mut self) -> String {
        let p = self.path();
        if self.chance(15) && !p.starts_with('"') {
            format!("{p}/")
        } else {
            p
        }
    }
    fn cond(&mut self, depth: u32) -> String {
        if depth == 0 && self.chance(10) {
            return self.pick(&["param ts=1", "param layout", "not param layout=maxfs"]).to_string();
        }
        match if depth > 2 { self.below(3) } else { self.below(6) } {
            0 => format!(
                "kernel {} {}",
                self.pick(&["<", "<=", "==", "!=", ">=", ">"]),
                self.pick(&["5.10", "6", "6.7.3"])
            ),
            1 => format!("driver {} {}", self.pick(&["==", "!="]), self.pick(&["kernel", "rootless", "fuse"])),
            2 => format!("option {}", self.pick(&["index=on", "userxattr", "xino=auto"])),
            3 => format!("not {}", self.cond(depth + 1)),
            4 => format!("({} and {})", self.cond(depth + 1), self.cond(depth + 1)),
            _ => format!("{} or {}", self.cond(depth + 1), self.cond(depth + 1)),
        }
    }
    fn comment(&mut self) -> String {
        if self.chance(15) {
            format!(" # {}", self.pick(&["note", "why: kernel docs", "#", "\"quoted\""]))
        } else {
            String::new()
        }
    }
    fn attrs(&mut self) -> String {
        let mut s = String::new();
        for _ in 0..self.below(3) {
            match self.below(3) {
                0 => s.push_str(&format!(" mode {}", self.pick(&["0644", "0755", "04755", "0"]))),
                1 => s.push_str(&format!(" owner {}", self.pick(&["0:0", "1000:1000", "65534:65534"]))),
                _ => s.push_str(&format!(" xattr user.{}={}", self.pick(&["a", "b.c"]), self.string())),
            }
        }
        // `mode` and `owner` may not repeat: keep the first of each.
        let mut seen_mode = false;
        let mut seen_owner = false;
        let words: Vec<&str> = s.split(' ').collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let w = words[i];
            if (w == "mode" && std::mem::replace(&mut seen_mode, true))
                || (w == "owner" && std::mem::replace(&mut seen_owner, true))
            {
                i += 2;
                continue;
            }
            out.push(w);
            i += 1;
        }
        let mut s = out.join(" ");
        if self.chance(10) {
            s.push_str(self.pick(&[" attrs +i", " attrs +a +A"]));
        }
        s
    }
    fn entry(&mut self, path: &str) -> String {
        let a = self.attrs();
        match self.below(9) {
            7 => format!("socket {path}{a}"),
            8 => format!("file {path} size {} sparse{a}", self.pick(&["0", "4KiB", "1GiB"])),
            0 => format!("file {path} {}{}{a}", self.string(), if self.chance(20) { " verity" } else { "" }),
            1 => format!("file {path} size {}{a}", self.pick(&["0", "12", "4KiB", "1MiB", "3B"])),
            2 => format!("dir {path}{}{a}", if self.chance(30) { " opaque" } else { "" }),
            3 => format!("symlink {path} -> {}{a}", self.target()),
            4 => format!("fifo {path}{a}"),
            5 => format!(
                "device {path} {} {}{a}",
                self.pick(&["char", "block"]),
                self.pick(&["0:0", "1:3", "4095:1048575"])
            ),
            _ => format!("whiteout {path}{a}"),
        }
    }
    fn result(&mut self, kind: u8) -> String {
        if !self.chance(50) {
            return String::new();
        }
        let r = match (self.below(4), kind) {
            (0, _) => "ok".to_string(),
            (3, 0) => self.pick(&["error", "EXDEV|ENOTEMPTY", "EBUSY|ENOTSUP|EWOULDBLOCK"]).to_string(),
            (1, 1) => self.string(),
            (1, 2) => format!("[{}]", ["a", "b", "\"c d\"", "é"][..self.below(4)].join(", ")),
            _ => self.pick(&["ENOENT", "EXDEV", "EACCES", "ENOTEMPTY", "EOVERFLOW"]).to_string(),
        };
        format!("{}=>{}{}", self.sp(), self.sp(), r)
    }
    fn op(&mut self) -> String {
        let p = self.op_path();
        let q = self.op_path();
        let (text, kind) = match self.below(50) {
            0 => (format!("write {p} {}", self.string()), 0),
            1 => (format!("append {p} {}", self.string()), 0),
            2 => (format!("create {p}"), 0),
            3 => (format!("truncate {p} {}", self.pick(&["0", "10", "1KiB"])), 0),
            4 => (format!("read {p}"), 1),
            5 => (format!("readlink {p}"), 1),
            6 => (format!("readdir {p}"), 2),
            7 => (format!("mkdir {p}{}", if self.chance(50) { " mode 0700" } else { "" }), 0),
            8 => (format!("rmdir {p}"), 0),
            9 => (format!("unlink {p}"), 0),
            10 => (format!("rename {p} {q}{}", ["", " noreplace", " exchange", " whiteout"][self.below(4)]), 0),
            11 => (format!("link {p} {q}"), 0),
            12 => (format!("symlink {p} -> {}", self.string()), 0),
            13 => (format!("mknod {p} {}", self.pick(&["fifo", "socket", "char 1:3", "block 7:0"])), 0),
            14 => (format!("chmod {p} {}", self.pick(&["0644", "0"])), 0),
            15 => (format!("chown {p} {}", self.pick(&["0:0", "1000:1000"])), 0),
            16 => (format!("touch {p}"), 0),
            17 => (format!("setxattr {p} user.k {}", self.string()), 0),
            18 => (format!("removexattr {p} trusted.overlay.opaque"), 0),
            19 => (format!("getxattr {p} user.k"), 1),
            20 => (format!("stat {p} as s1"), 0),
            21 => (format!("same-inode {p} s0"), 0),
            22 => ("drop-caches".to_string(), 0),
            23 => ("sync".to_string(), 0),
            // Descriptors: f0 is open from the mount on; f1 opens and closes.
            24 => {
                let flags =
                    self.pick(&["rdonly", "wronly|creat|trunc", "rdwr|append", "path", "rdonly|directory|nofollow"]);
                let mode = if self.chance(30) { " mode 0600" } else { "" };
                (format!("open {p} as f1 {flags}{mode}\nclose f1"), 0)
            }
            25 => (format!("write f0 {}{}", self.string(), if self.chance(50) { " at 4KiB" } else { "" }), 0),
            26 => (
                format!("read f0{}{}", ["", " 10", " 1KiB"][self.below(3)], if self.chance(50) { " at 3" } else { "" }),
                1,
            ),
            27 => (format!("readdir f0{}", if self.chance(50) { " max 2" } else { "" }), 2),
            28 => ("rewind f0".to_string(), 0),
            29 => (format!("ftruncate f0 {}", self.pick(&["0", "1MiB"])), 0),
            30 => ("fsync f0".to_string(), 0),
            31 => ("fdatasync f0".to_string(), 0),
            32 => ("fchmod f0 0600".to_string(), 0),
            33 => ("fchown f0 1000:1000".to_string(), 0),
            34 => (format!("fsetxattr f0 user.k {}", self.string()), 0),
            35 => ("fgetxattr f0 user.k".to_string(), 1),
            36 => ("fstat f0 as s1".to_string(), 0),
            37 => (format!("fallocate f0 0 4KiB{}", ["", " keep-size", " punch-hole"][self.below(3)]), 0),
            38 => {
                (format!("flock f0 {}{}", self.pick(&["sh", "ex", "un"]), if self.chance(50) { " nb" } else { "" }), 0)
            }
            39 => (format!("mmap f0 write {} at 0", self.string()), 0),
            40 => ("mmap f0 read 5 at 1".to_string(), 1),
            41 => {
                let (fields, how) =
                    [("ino,dev", "same"), ("nlink", "different"), ("mtime,ctime", "newer"), ("atime", "older")]
                        [self.below(4)];
                (format!("lstat {p} as s2\ncompare {q} s2 {fields} {how}"), 0)
            }
            42 => (
                format!(
                    "statfs {p} as fs\ncompare @s0 s0 ino same\nvalue s0 nlink {} 1",
                    self.pick(&["==", ">=", "<"])
                ),
                0,
            ),
            43 => {
                (format!("dirent {p} {} as d1\ncompare {q} d1 d_ino same", self.pick(&["x", ".", "..", "\"a b\""])), 0)
            }
            44 => (format!("listxattr {p}"), 2),
            48 => (format!("sleep {}", self.pick(&["1ms", "2s", "0ms"])), 0),
            47 => (format!("chattr {p} +i -a\nchattr f0 +A\nsetacl {p} default \"o::r--, u::rwx,g::---\""), 0),
            46 => (format!("handle {p} as h0\nopen-handle h0 as f9 rdonly|directory\nclose f9"), 0),
            45 => {
                let l = self.pick(&["l0", "\"l 0:x\""]);
                (format!("stat {l}:{p} as s3\ncompare {l}:{p} s3 ino,dev same\nlstat {l}:{p} as s4"), 0)
            }
            49 if self.chance(50) => (format!("measure {p}"), 1),
            49 => (format!("measure {}:{p}", self.pick(&["l0", "\"l 0:x\""])), 1),
            _ => ("sync".to_string(), 0),
        };
        format!("{text}{}", self.result(kind))
    }
    fn check(&mut self, upper: bool) -> String {
        let p = self.path();
        let upper_only = ["whiteout", "metacopy", "redirect", "opaque"];
        loop {
            let c = match self.below(19) {
                0 => format!("file {p}{}", if self.chance(50) { format!(" {}", self.string()) } else { String::new() }),
                1 => format!("file {p} size 4KiB"),
                2 => format!("dir {p}"),
                3 => format!("dir {p} opaque"),
                4 => format!("dir {p} not opaque"),
                5 => format!("symlink {p} -> {}", self.string()),
                6 => format!("fifo {p}"),
                7 => format!("device {p} char 0:0"),
                8 => format!("whiteout {p}"),
                9 => format!("absent {p}"),
                10 => format!("xattr {p} user.k {}", self.string()),
                15 => format!("blocks {p} {} {}", self.pick(&["<", "==", ">="]), self.below(9)),
                16 => format!("xattrs {p} [user.k, \"trusted.overlay.origin\"]"),
                17 => format!("attrs {p} +i -a +A"),
                18 => format!("acl {p} \"u::rw-,u:7:r--,g::r--,m::r--,o::---\""),
                11 => format!("no xattr {p} user.k"),
                12 if self.chance(50) => format!("metacopy {p} {}", self.pick(&["\"\"", "\"sha256:00ff\""])),
                12 => format!("metacopy {p}"),
                13 => format!("redirect {p} {}", self.string()),
                _ => format!("{} {p} {}", self.pick(&["mode", "owner", "nlink"]), "0"),
            };
            let c = if c.starts_with("owner ") { format!("{c}:0") } else { c };
            if upper || !upper_only.iter().any(|w| c.starts_with(w) || c.contains(" opaque")) {
                return c;
            }
        }
    }
    fn block(&mut self, head: &str, items: Vec<String>, indent: &str) -> String {
        if items.len() == 1 && self.chance(30) && !items[0].contains('#') {
            return format!("{head}{}{{ {} }}", self.sp(), items[0]);
        }
        let mut s = format!("{head} {{{}\n", self.comment());
        for it in items {
            if self.chance(10) {
                s.push('\n');
            }
            if self.chance(10) {
                s.push_str(&format!("{indent}    # comment line\n"));
            }
            let pad = if self.chance(20) { "  " } else { "    " };
            s.push_str(&format!("{indent}{pad}{it}{}\n", self.comment()));
        }
        s.push_str(&format!("{indent}}}"));
        s
    }
    fn expect(&mut self, indent: &str) -> String {
        match self.below(3) {
            0 => {
                let n = self.below(4);
                let checks = (0..n).map(|_| self.check(true)).collect();
                let target = if self.chance(20) { "work" } else { "upper" };
                let raw = if target == "upper" && self.chance(20) { " raw" } else { "" };
                let head = format!("expect {target}{raw}{}", if self.chance(30) { " exactly" } else { "" });
                let mut checks: Vec<String> = checks;
                if self.chance(30) {
                    checks.push(format!("entries {} {}", self.path(), self.below(3)));
                }
                self.block(&head, checks, indent)
            }
            1 => {
                let n = self.below(4);
                let checks = (0..n).map(|_| self.check(false)).collect();
                self.block("expect merged", checks, indent)
            }
            _ => {
                let n = self.below(4);
                let p = self.path();
                let q = self.path();
                let s = self.string();
                let all = [
                    format!("dir {p}"),
                    format!("file {p} {s}"),
                    format!("symlink {q} -> {s}"),
                    format!("hardlink {q} -> {p}"),
                    format!("whiteout {p}"),
                    format!("opaque {q}"),
                ];
                let members = (0..n).map(|_| all[self.below(all.len())].clone()).collect();
                self.block("expect layer", members, indent)
            }
        }
    }
    fn body_stmt(&mut self, depth: usize) -> String {
        let indent = "    ".repeat(depth);
        match self.below(12) {
            0..=4 => self.op(),
            5 | 6 => self.expect(&indent),
            7 if depth < 3 => {
                let n = 1 + self.below(3);
                let items = (0..n).map(|_| self.body_stmt(depth + 1)).collect();
                let head = format!("if {}", self.cond(0));
                let mut s = self.block(&head, items, &indent);
                if self.chance(40) {
                    let items = (0..1 + self.below(2)).map(|_| self.body_stmt(depth + 1)).collect();
                    let els = if self.chance(50) { format!(" else if {}", self.cond(0)) } else { " else".to_string() };
                    s.push_str(&self.block(&els, items, &indent));
                }
                s
            }
            8 => {
                let n = 1 + self.below(3);
                let items = (0..n).map(|_| self.op()).collect();
                let owner = self.pick(&["1000:1000", "0:0", "1000:1000 in userns"]);
                self.block(&format!("as {owner}"), items, &indent)
            }
            9 if self.chance(40) => {
                let p = self.path();
                let items = [
                    self.entry(&p),
                    format!("remove {}", self.path()),
                    format!("xattr {} trusted.overlay.opaque=\"y\"", self.path()),
                    format!("no xattr {} user.k", self.path()),
                    format!("attrs {} +i -a", self.path()),
                ];
                let n = 1 + self.below(items.len());
                let head = self.pick(&["edit layer l0", "edit upper", "edit work"]);
                self.block(head, items[..n].to_vec(), &indent)
            }
            10 => {
                // Several mounts, self-contained: named, nested, `on`, named trees.
                let work = self.pick(&["", " work w7"]);
                let mut s = format!("mount l0 upper u7{work} as m7\n{indent}");
                let n = 1 + self.below(3);
                let items = (0..n).map(|_| self.op()).collect();
                s.push_str(&self.block("on m7", items, &indent));
                let nested = self.pick(&[
                    "m7:/, l0 readonly",
                    "l0 upper m7:/e0 work m7:/e1",
                    "u7, l0 upper u8",
                    "u7:/e0, l0:/e1 readonly",
                ]);
                s.push_str(&format!("\n{indent}mount {nested} as n1 => error\n{indent}"));
                let checks = vec![format!("entries {} {}", self.path(), self.below(3))];
                let (target, name) = match self.below(3) {
                    0 => ("upper", " u7"),
                    1 => ("work", if work.is_empty() { " u7" } else { " w7" }),
                    _ => ("merged", " on m7"),
                };
                s.push_str(&self.block(&format!("expect {target}{name}"), checks, &indent));
                // Mounted again unnamed, so that a later `remount` repeats no failing mount.
                s.push_str(&format!("\n{indent}umount m7\n{indent}mount l0"));
                s
            }
            11 if self.chance(30) => {
                let checks = vec![format!("contains {}", self.string()), format!("not contains {}", self.string())];
                let mut s = self.block("expect mountinfo", checks, &indent);
                s.push_str(&format!("\n{indent}reconfigure with ro => {}", self.pick(&["ok", "EINVAL", "error"])));
                s.push_str(&format!(
                    "\n{indent}mount \"l 0:x\", l0 readonly options {} => error",
                    self.pick(&["\"lowerdir+=l0\"", "\"redirect_dir=on,x=1\"", "\"\""])
                ));
                s.push_str(&format!("\n{indent}mount l0"));
                s
            }
            _ => self.pick(&["umount", "remount", "remount => EBUSY"]).to_string() + "\nmount l0",
        }
    }

    /// A whole valid scenario, in an arbitrary (not canonical) layout.
    fn scenario(&mut self) -> String {
        let mut s = String::new();
        if self.chance(30) {
            s.push_str("# leading comment\n\n");
        }
        s.push_str(&format!("scenario{}{}\n", " ".repeat(1 + self.below(2)), self.string()));
        if self.chance(50) {
            if self.chance(50) {
                s.push_str("about \"\"\"\n    Several lines\n      indented\n\n    and more.\n    \"\"\"\n");
            } else {
                s.push_str(&format!("about {}\n", self.string()));
            }
        }
        if self.chance(50) {
            s.push_str("tags lab,copy-up , x_1\n");
        }
        if self.chance(50) {
            s.push_str(&format!("requires {}, {}\n", self.cond(0), self.cond(0)));
        }
        if self.chance(40) {
            s.push_str("vary index=on|off, metacopy=on|off\n");
        }
        if self.chance(30) {
            s.push_str("param layout=samefs|maxfs, ts=0|1\n");
        }
        if self.chance(30) {
            s.push_str(&format!("backing {}\n", self.pick(&["tmpfs", "ext4", "xfs", "btrfs"])));
        }
        let layers = 1 + self.below(3);
        for l in 0..layers {
            if self.chance(15) {
                s.push_str(&format!("layer l{l} from \"layers/l{l}.tar\"\n"));
                continue;
            }
            let n = self.below(4);
            let entries = (0..n).map(|i| self.entry(&format!("/e{i}"))).collect();
            let b = self.block(&format!("layer l{l}"), entries, "");
            s.push_str(&b);
            s.push('\n');
        }
        s.push_str(self.pick(&["layer \"l 0:x\" { file /q }\n", "layer \"l 0:x\" {\n}\n"]));
        if self.chance(30) {
            s.push_str(self.pick(&["filesystem f0 tmpfs\n", "filesystem f0 ext4 size 64MiB\n"]));
            s.push_str("layer lf on f0 { file /lf }\nmount lf upper uf on f0 as mf\numount mf\n");
        }
        let names: Vec<String> = (0..layers).map(|l| format!("l{l}")).collect();
        s.push_str(&format!("mount {}", names.join(&format!(",{}", self.sp()))));
        if self.chance(40) {
            s.push_str(" with redirect_dir=on, xino=auto,userxattr");
        }
        if self.chance(40) {
            s.push_str(&format!(
                " {}",
                self.pick(&["as m0", "work w0 as m0", "work w0", "driver fuse", "as m0 driver kernel"])
            ));
        }
        if self.chance(30) {
            s.push_str(&format!(" via {}", self.pick(&["string", "append", "fd", "legacy"])));
        }
        s.push_str(&format!("{}\nstat /e0 as s0\nopen /e0 as f0 rdwr\n", self.comment()));
        for _ in 0..self.below(12) {
            if self.chance(10) {
                s.push('\n');
            }
            s.push_str(&self.body_stmt(0));
            s.push_str(&self.comment());
            s.push('\n');
        }
        if self.chance(20) {
            s.push_str("# trailing comment");
        }
        s
    }
}

fn assert_faithful(name: &str, text: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(s) = dsl::parse(name, "t", text) {
        let out = dsl::format(&s);
        let again = dsl::parse(name, "t", out.as_bytes()).map_err(|f| {
            TestCaseError::fail(format!("formatted output does not parse:\n{out}\n{}", f.render(false, 100)))
        })?;
        prop_assert_eq!(&again, &s, "parse(fmt(x)) != parse(x) for\n{}\n---\n{}", String::from_utf8_lossy(text), out);
        prop_assert_eq!(dsl::format(&again), out, "fmt is not idempotent");
    }
    Ok(())
}

fn library() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [root.join("../scenarios/lab"), root.join("tests/errors"), root.join("tests/fixtures")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "ovl") {
                out.push(std::fs::read(p).unwrap());
            }
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = dsl::parse("fuzz.ovl", "fuzz", &bytes);
    }

    #[test]
    fn random_text_of_language_tokens_never_panics(words in proptest::collection::vec(
        prop_oneof![
            Just("scenario"), Just("layer"), Just("mount"), Just("expect"), Just("upper"), Just("if"),
            Just("else"), Just("as"), Just("{"), Just("}"), Just("("), Just(")"), Just("\""), Just("\"\"\""),
            Just("\n"), Just("/a"), Just("=>"), Just("ENOENT"), Just("not"), Just("kernel"), Just(">="),
            Just("5.10"), Just(","), Just("::"), Just("#"), Just("with"), Just("x=y"), Just("[a]"), Just("0644"),
            Just("file"), Just("dir"), Just("0:0"), Just("vary"), Just("a=1|2"), Just("\\"), Just("é"),
            Just("open"), Just("close"), Just("f"), Just("rdwr|creat"), Just("at"), Just("mmap"), Just("error"),
            Just("EXDEV|EBUSY"), Just("max"), Just("fstat"), Just("flock"), Just("nb"),
        ], 0..200)) {
        let text = words.join(" ");
        let _ = dsl::parse("fuzz.ovl", "fuzz", text.as_bytes());
        assert_faithful("fuzz.ovl", text.as_bytes())?;
    }

    #[test]
    fn mutated_library_files_never_panic_and_stay_faithful(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..8),
    ) {
        let lib = library();
        let mut bytes = lib[pick.index(lib.len())].clone();
        for (at, what, byte) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match what {
                0 => { bytes.remove(i); }
                1 => bytes.insert(i, byte),
                2 => bytes[i] = byte,
                _ => { let j = at.index(bytes.len().min(i + 40).max(1)); let chunk = bytes[i.min(j)..i.max(j)].to_vec(); bytes.splice(i..i, chunk); }
            }
        }
        assert_faithful("mutant.ovl", &bytes)?;
    }

    #[test]
    fn generated_scenarios_parse_and_format_faithfully(seed in any::<u64>()) {
        let text = Gen(seed).scenario();
        match dsl::parse("gen.ovl", "gen", text.as_bytes()) {
            Ok(_) => assert_faithful("gen.ovl", text.as_bytes())?,
            Err(f) => return Err(TestCaseError::fail(format!("seed {seed}: generated scenario does not parse:\n{text}\n{}", f.render(false, 100)))),
        }
    }
}

#[test]
fn library_files_are_faithful() {
    for text in library() {
        assert_faithful("lib.ovl", &text).unwrap();
    }
}
