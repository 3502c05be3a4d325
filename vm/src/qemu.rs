//! QEMU: the command line, a pure function of a machine description, and
//! where the binary is; booting a machine and watching it is `console`.

use std::path::PathBuf;

use crate::VmError;

/// How QEMU executes the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation, where a probe showed it really runs a guest.
    Kvm,
    /// Software emulation: slower, always there.
    Tcg,
}

/// One disposable machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// Extra kernel command line words.
    pub append: Vec<String>,
    /// Raw disk images, attached as virtio disks in order (`/dev/vda`, `/dev/vdb`, ...).
    pub disks: Vec<PathBuf>,
}

/// The kernel command line: the console on the first serial port, a panic
/// ends the machine at once (QEMU exits with `-no-reboot`).
pub fn kernel_cmdline(m: &Machine) -> String {
    let mut words = vec!["console=ttyS0", "panic=-1", "oops=panic", "rdinit=/init", "quiet", "loglevel=4"]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    words.extend(m.append.iter().cloned());
    words.join(" ")
}

/// The QEMU arguments for a machine, each commented where it matters.
pub fn args(m: &Machine) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &str| a.push(s.to_string());
    // No default devices (no VGA, no network): only what is added below.
    push("-nodefaults");
    // A panic or a poweroff ends QEMU instead of restarting the guest.
    push("-no-reboot");
    push("-display");
    push("none");
    push("-machine");
    push(match m.accel {
        Accel::Kvm => "q35,accel=kvm",
        Accel::Tcg => "q35,accel=tcg",
    });
    push("-cpu");
    push(match m.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    });
    push("-smp");
    a.push(m.cpus.to_string());
    a.push("-m".into());
    a.push(format!("{}M", m.memory_mib));
    // The serial console is QEMU's standard output.
    a.push("-serial".into());
    a.push("stdio".into());
    a.push("-kernel".into());
    a.push(m.kernel.display().to_string());
    a.push("-initrd".into());
    a.push(m.initrd.display().to_string());
    a.push("-append".into());
    a.push(kernel_cmdline(m));
    // Scratch disks: throwaway images, so the host page cache may hold their writes.
    for d in &m.disks {
        a.push("-drive".into());
        a.push(format!("file={},format=raw,if=virtio,cache=unsafe", d.display()));
    }
    a
}

/// The QEMU binary, or an error that says how to install it.
pub fn qemu_binary() -> Result<PathBuf, VmError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .ok_or_else(|| VmError::Qemu("qemu-system-x86_64 is not installed: apt-get install -y qemu-system-x86".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command lines, one argument per line, are snapshots: a change to
    /// how machines start shows up in review.
    #[test]
    fn command_lines() {
        let m = Machine {
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd".into(),
            memory_mib: 256,
            cpus: 1,
            accel: Accel::Tcg,
            append: vec!["ovlc.disks=ext4,xfs".into()],
            disks: vec!["/t/ext4.img".into(), "/t/xfs.img".into()],
        };
        insta::assert_snapshot!("tcg_with_disks", args(&m).join("\n"));
        let k = Machine { accel: Accel::Kvm, append: Vec::new(), disks: Vec::new(), ..m };
        insta::assert_snapshot!("kvm", args(&k).join("\n"));
    }
}
