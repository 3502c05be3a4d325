//! Mounting and unmounting an instance's overlay, in one place: with the new
//! mount API (`fsopen` + `fsconfig`, layer by layer for long stacks), with
//! mount(2) (`OVLC_MOUNT_API=legacy`, old kernels, long option strings), or
//! through fuse-overlayfs; always `nodev` outside a disposable guest.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dsl::ast::Via;
use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::sys;

/// Mount options: `lowerdir=a:b`, `userxattr`, ...
pub type Options = [(String, Option<String>)];

/// What serves a mounted overlay.
#[derive(Debug)]
pub enum Mounted {
    Kernel,
    Fuse(Child),
}

/// A refused mount: the errno, and the words of whoever refused it (the fs
/// context's messages, fuse-overlayfs' stderr).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub errno: Errno,
    pub notes: Vec<String>,
}

impl Refused {
    fn new(errno: Errno, notes: Vec<String>) -> Refused {
        Refused { errno, notes }
    }
}

/// One attempt to mount: the API it took (`fsconfig`, `mount(2)`,
/// `fuse-overlayfs`), the calls it made, and what came of it.
#[derive(Debug)]
pub struct Attempt {
    pub api: &'static str,
    pub syscall: String,
    pub result: Result<Mounted, Refused>,
}

/// Where an overlay goes: its mount point, and the directory its layers are
/// in (mount(2) names them relative to it when the options are long).
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub merged: &'a Path,
    pub layers: &'a Path,
}

/// The mount flags instance mounts get, as `explain` names them.
pub fn nodev_name() -> &'static str {
    if sys::devices_live() {
        "0"
    } else {
        "MS_NODEV"
    }
}

/// Mount options as one string: `lowerdir=a:b,upperdir=u,userxattr`.
pub fn option_string(opts: &Options) -> String {
    opts.iter().map(|(k, v)| v.as_ref().map_or(k.clone(), |v| format!("{k}={v}"))).collect::<Vec<_>>().join(",")
}

/// A layer's directory as one item of `lowerdir=`: `\`, `:` and `,` escaped
/// with `\`, as the kernel documents (its parser unescapes them).
pub fn escape_layer(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A `lowerdir=` value's layers, unescaped: the regular ones, then the
/// data-only ones (after `::`).
pub fn split_lowerdir(v: &str) -> (Vec<String>, Vec<String>) {
    // Items between unescaped colons; an empty item marks `::`.
    let mut items: Vec<String> = vec![String::new()];
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => items.last_mut().unwrap_or(&mut String::new()).extend(chars.next()),
            ':' => items.push(String::new()),
            c => items.last_mut().unwrap_or(&mut String::new()).push(c),
        }
    }
    let (mut lowers, mut data, mut in_data) = (Vec::new(), Vec::new(), false);
    for item in items {
        match (item.is_empty(), in_data) {
            (true, _) => in_data = true,
            (false, false) => lowers.push(item),
            (false, true) => data.push(item),
        }
    }
    (lowers, data)
}

/// Options for mount(2) with the layers named relative to `layers` (for a
/// call made from that directory: the option string is at most a page).
pub fn relative_to(opts: &Options, layers: &Path) -> Vec<(String, Option<String>)> {
    let prefix = format!("{}/", layers.display());
    opts.iter()
        .map(|(k, v)| match (k.as_str(), v) {
            ("lowerdir", Some(v)) => (k.clone(), Some(v.replace(&prefix, ""))),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

/// The kernel's overlay. `via` says how the layers travel: `string`
/// (default) with the new mount API, falling back to mount(2) where it is
/// missing (or `OVLC_MOUNT_API=legacy` asks for it) and layer by layer for a
/// long stack; `append` always layer by layer (`lowerdir+`, `datadir+`);
/// `fd` each layer, the upper and the workdir as a descriptor
/// (`FSCONFIG_SET_FD`); `legacy` mount(2).
pub fn kernel(at: Place<'_>, opts: &Options, via: Via) -> Attempt {
    if via == Via::Legacy {
        return legacy(at, opts);
    }
    let ctx = if crate::settings::get().legacy_mount_api && via == Via::String {
        Err(Errno::ENOSYS)
    } else {
        sys::FsContext::open("overlay")
    };
    let ctx = match ctx {
        Ok(ctx) => ctx,
        Err(Errno::ENOSYS) if via == Via::String => return legacy(at, opts),
        Err(e) => {
            let why = "fsopen(\"overlay\") failed: is the overlay module available?".to_string();
            return Attempt { api: "fsconfig", syscall: "fsopen".into(), result: Err(Refused::new(e, vec![why])) };
        }
    };
    let syscall = match via {
        Via::Append => "fsopen(\"overlay\") + fsconfig(lowerdir+, datadir+, ...) + fsmount + move_mount",
        Via::Fd => "fsopen(\"overlay\") + fsconfig(FSCONFIG_SET_FD: lowerdir+, datadir+, upperdir, workdir) + fsmount + move_mount",
        _ => "fsopen(\"overlay\") + fsconfig(...) + fsmount + move_mount",
    }
    .to_string();
    let refused = |e: Errno, ctx: &sys::FsContext| Attempt {
        api: "fsconfig",
        syscall: syscall.clone(),
        result: Err(Refused::new(e, ctx.messages())),
    };
    let _ = ctx.set("source", Some("overlay"));
    for (k, v) in opts {
        let set = match (k.as_str(), v.as_deref(), via) {
            ("lowerdir", Some(v), Via::Append | Via::Fd) => layer_by_layer(&ctx, v, via == Via::Fd),
            ("upperdir" | "workdir", Some(v), Via::Fd) => by_fd(&ctx, k, v),
            // fsconfig takes strings of at most 255 bytes: a long stack goes
            // layer by layer (lowerdir+, datadir+: kernel 6.8), or, where
            // those keys are unknown, through mount(2).
            ("lowerdir", Some(v), Via::String) if v.len() > 255 => {
                if !overlay_parses_keys() || layer_by_layer(&ctx, v, false).is_err() {
                    // Kernels without those keys refuse them: mount(2) then.
                    return legacy(at, opts);
                }
                Ok(())
            }
            _ => ctx.set(k, v.as_deref()),
        };
        if let Err(e) = set {
            return refused(e, &ctx);
        }
    }
    let attrs = if sys::devices_live() { 0 } else { sys::MOUNT_ATTR_NODEV };
    match ctx.mount_at(at.merged, attrs) {
        Ok(()) => Attempt { api: "fsconfig", syscall, result: Ok(Mounted::Kernel) },
        Err(e) => refused(e, &ctx),
    }
}

/// Does the overlay read fsconfig keys itself (6.5 on)? Before, the kernel
/// gathers any key into one option string that the overlay reads only at
/// mount time, where `lowerdir+` is unknown. Asked once per process (one
/// kernel): a made-up key is refused only by an overlay that reads keys.
fn overlay_parses_keys() -> bool {
    static NATIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NATIVE.get_or_init(|| sys::FsContext::open("overlay").is_ok_and(|c| c.set("ovlc-probe", None).is_err()))
}

/// A kernel mount, tried again for up to 1 s while the kernel says EBUSY.
/// A process that another thread forks holds copies of every descriptor
/// until it execs, a mount's fs_context among them, and an fs_context keeps
/// its overlay's superblock active: for that moment after an `umount` the
/// last overlay's upper and work directories are still "in use", and a new
/// mount of them with `index=on` is refused. A mount that is refused for
/// good (a work directory another live mount uses) costs the 1 s.
pub fn settled(attempt: impl Fn() -> Attempt) -> Attempt {
    let mut a = attempt();
    for _ in 0..100 {
        if !matches!(&a.result, Err(r) if r.errno == Errno::EBUSY) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        a = attempt();
    }
    a
}

/// A `lowerdir=` value given layer by layer: `lowerdir+` and `datadir+`, as
/// strings or (`fd`) as descriptors.
fn layer_by_layer(ctx: &sys::FsContext, lowerdir: &str, fd: bool) -> Result<(), Errno> {
    let (lowers, data) = split_lowerdir(lowerdir);
    for (key, l) in lowers.iter().map(|l| ("lowerdir+", l)).chain(data.iter().map(|d| ("datadir+", d))) {
        if fd {
            by_fd(ctx, key, l)?;
        } else {
            ctx.set(key, Some(l))?;
        }
    }
    Ok(())
}

/// A directory parameter given as a descriptor of the directory.
fn by_fd(ctx: &sys::FsContext, key: &str, dir: &str) -> Result<(), Errno> {
    let fd =
        nix::fcntl::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?;
    ctx.set_fd(key, &fd)
}

/// mount(2) with the options as one string. Its data is one page: a longer
/// option string names the layers relative to their directory, with the
/// working directory there for the call (under a lock: a process's threads
/// may share it).
pub fn legacy(at: Place<'_>, opts: &Options) -> Attempt {
    legacy_from(at, opts, false)
}

/// mount(2) with a scenario's raw option string after ovlc's options, made
/// from the layers' directory: names in it are the layers' own names.
pub fn legacy_raw(at: Place<'_>, opts: &Options, raw: &str) -> Attempt {
    let mut all = opts.to_vec();
    all.push((raw.to_string(), None));
    legacy_from(at, &all, true)
}

fn legacy_from(at: Place<'_>, opts: &Options, in_layers: bool) -> Attempt {
    static CWD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let api = "mount(2)";
    let data = option_string(opts);
    if data.len() < 4000 && !in_layers {
        let syscall = format!("mount(\"overlay\", merged, \"overlay\", {}, options)", nodev_name());
        let result = sys::mount_legacy("overlay", at.merged, "overlay", sys::nodev_flags(), &data)
            .map(|()| Mounted::Kernel)
            .map_err(|e| Refused::new(e, Vec::new()));
        return Attempt { api, syscall, result };
    }
    let syscall = format!(
        "chdir(layers) + mount(\"overlay\", merged, \"overlay\", {}, options with a relative lowerdir)",
        nodev_name()
    );
    let data = option_string(&relative_to(opts, at.layers));
    let _guard = CWD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let result = (|| {
        let back = std::env::current_dir().map_err(|e| Refused::new(Errno::EIO, vec![format!("getcwd: {e}")]))?;
        std::env::set_current_dir(at.layers)
            .map_err(|e| Refused::new(Errno::EIO, vec![format!("chdir {}: {e}", at.layers.display())]))?;
        let r = sys::mount_legacy("overlay", at.merged, "overlay", sys::nodev_flags(), &data);
        let _ = std::env::set_current_dir(back);
        r.map(|()| Mounted::Kernel).map_err(|e| Refused::new(e, Vec::new()))
    })();
    Attempt { api, syscall, result }
}

/// fuse-overlayfs (`bin`) in the foreground, as a child of this process,
/// started in the layers' directory; mounted once the mount point is one
/// (within 20 s).
pub fn fuse(bin: &Path, at: Place<'_>, opts: &Options) -> Attempt {
    let merged = at.merged;
    let api = "fuse-overlayfs";
    let syscall = format!("{} -f -o {} merged", bin.display(), "lowerdir=...,upperdir=...,workdir=...");
    let refused =
        |errno, note: String| Attempt { api, syscall: syscall.clone(), result: Err(Refused::new(errno, vec![note])) };
    let mut all = option_string(opts);
    if !sys::devices_live() {
        all.push_str(",nodev");
    }
    let mut cmd = Command::new(bin);
    cmd.arg("-f").arg("-o").arg(all).arg(merged);
    cmd.current_dir(at.layers).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    sys::die_with_parent(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return refused(Errno::ENOENT, format!("cannot start {}: {e}", bin.display())),
    };
    sys::watchdog::track(child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if sys::is_mountpoint(merged) {
            return Attempt { api, syscall, result: Ok(Mounted::Fuse(child)) };
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut msg = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut msg);
            }
            return refused(Errno::EINVAL, format!("fuse-overlayfs exited ({status}): {}", msg.trim()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return refused(Errno::ETIMEDOUT, "fuse-overlayfs did not mount within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `reconfigure with OPTS`: `fspick` the overlay's superblock, set each
/// option, `FSCONFIG_CMD_RECONFIGURE`; mount(2) with `MS_REMOUNT` where the
/// new mount API is missing.
pub fn reconfigure(merged: &Path, opts: &Options) -> (String, Result<(), Refused>) {
    match sys::FsContext::pick(merged) {
        Ok(ctx) => {
            let call = "fspick(merged) + fsconfig(...) + fsconfig(FSCONFIG_CMD_RECONFIGURE)".to_string();
            let r = opts.iter().try_for_each(|(k, v)| ctx.set(k, v.as_deref())).and_then(|()| ctx.reconfigure());
            (call, r.map_err(|e| Refused::new(e, ctx.messages())))
        }
        Err(Errno::ENOSYS) => {
            let ro = opts.iter().any(|(k, _)| k == "ro");
            let rest: Vec<(String, Option<String>)> =
                opts.iter().filter(|(k, _)| k != "ro" && k != "rw").cloned().collect();
            let flags = libc::MS_REMOUNT | if ro { libc::MS_RDONLY } else { 0 } | sys::nodev_flags();
            let call = "mount(NULL, merged, NULL, MS_REMOUNT, options)".to_string();
            let r = sys::mount_legacy("overlay", merged, "overlay", flags, &option_string(&rest));
            (call, r.map_err(|e| Refused::new(e, Vec::new())))
        }
        Err(e) => ("fspick(merged)".to_string(), Err(Refused::new(e, Vec::new()))),
    }
}

/// The line of the instance's `mountinfo` whose mount point is `merged`, with
/// `root` (the instance's directory) shown as `.`.
pub fn mountinfo_line(merged: &Path, root: &Path) -> Option<String> {
    Some(sys::mountinfo_line(merged)?.replace(&mountinfo_escaped(&root.display().to_string()), "."))
}

/// A path as mountinfo shows it: space, tab, newline and backslash octal-escaped.
fn mountinfo_escaped(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Unmounts the overlay at `merged`, and then waits for its fuse-overlayfs to
/// exit (killing it after 10 s); when the kernel refuses, it stays mounted.
pub fn unmount(merged: &Path, how: &mut Mounted) -> Result<(), Errno> {
    // EBUSY can be transient: a child that another thread is starting holds
    // copies of every descriptor between fork and exec (or a fuse daemon is
    // still answering). Retry for a moment before reporting it.
    let mut r = sys::umount(merged, 0);
    for _ in 0..100 {
        if r != Err(Errno::EBUSY) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        r = sys::umount(merged, 0);
    }
    if let (Ok(()), Mounted::Fuse(child)) = (r, how) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_directory_is_found_as_mountinfo_escapes_it() {
        assert_eq!(mountinfo_escaped("/tmp/a b\\c/w"), "/tmp/a\\040b\\134c/w");
        assert_eq!(mountinfo_escaped("/tmp/plain"), "/tmp/plain");
    }

    fn opts(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    }

    #[test]
    fn options_join_with_and_without_values() {
        let o = opts(&[("lowerdir", Some("/l/a:/l/b")), ("upperdir", Some("/u")), ("userxattr", None)]);
        assert_eq!(option_string(&o), "lowerdir=/l/a:/l/b,upperdir=/u,userxattr");
        assert_eq!(option_string(&[]), "");
    }

    #[test]
    fn escaped_layer_names_split_back_to_themselves() {
        let names = ["/l/a:b", "/l/c,d", "/l/e\\f", "/l/plain"];
        let joined = format!(
            "{}:{}::{}::{}",
            escape_layer(names[0]),
            escape_layer(names[1]),
            escape_layer(names[2]),
            escape_layer(names[3])
        );
        assert_eq!(joined, "/l/a\\:b:/l/c\\,d::/l/e\\\\f::/l/plain");
        let (lowers, data) = split_lowerdir(&joined);
        assert_eq!(lowers, vec!["/l/a:b".to_string(), "/l/c,d".to_string()]);
        assert_eq!(data, vec!["/l/e\\f".to_string(), "/l/plain".to_string()]);
    }

    #[test]
    fn lowerdir_splits_into_layers_and_data_only_layers() {
        assert_eq!(split_lowerdir("/a:/b"), (vec!["/a".to_string(), "/b".to_string()], vec![]));
        assert_eq!(
            split_lowerdir("/a::/d1::/d2"),
            (vec!["/a".to_string()], vec!["/d1".to_string(), "/d2".to_string()])
        );
        assert_eq!(split_lowerdir(""), (vec![], vec![]));
    }

    #[test]
    fn long_option_strings_name_layers_relative_to_their_directory() {
        let o = opts(&[("lowerdir", Some("/w/layers/a:/w/layers/b::/w/layers/d")), ("upperdir", Some("/w/layers/u"))]);
        let r = relative_to(&o, Path::new("/w/layers"));
        assert_eq!(option_string(&r), "lowerdir=a:b::d,upperdir=/w/layers/u", "only lowerdir is relative");
    }
}
