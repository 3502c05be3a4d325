//! The guest's initramfs: a cpio archive in the `newc` format, written here
//! from a manifest (a pure description of what goes where).

use std::path::PathBuf;

/// One file of the initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// A file read from the host when the archive is written.
    HostFile {
        path: String,
        mode: u32,
        from: PathBuf,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. }
            | Entry::File { path, .. }
            | Entry::HostFile { path, .. }
            | Entry::Symlink { path, .. } => path,
        }
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, name: &str) {
    let namesize = name.len() + 1;
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, 0, 0, namesize as u32, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Writes the archive (parents must be listed before their children).
pub fn write(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        let name = e.path().trim_start_matches('/');
        match e {
            Entry::Dir { mode, .. } => header(&mut out, ino, 0o040000 | mode, 2, 0, name),
            Entry::File { mode, data, .. } => {
                header(&mut out, ino, 0o100000 | mode, 1, data.len(), name);
                out.extend_from_slice(data);
                pad4(&mut out);
            }
            Entry::HostFile { mode, from, .. } => {
                let data = std::fs::read(from)?;
                header(&mut out, ino, 0o100000 | mode, 1, data.len(), name);
                out.extend_from_slice(&data);
                pad4(&mut out);
            }
            Entry::Symlink { target, .. } => {
                header(&mut out, ino, 0o120777, 1, target.len(), name);
                out.extend_from_slice(target.as_bytes());
                pad4(&mut out);
            }
        }
    }
    header(&mut out, 0, 0, 1, 0, "TRAILER!!!");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_is_what_the_kernel_reads() {
        let a = write(&[
            Entry::Dir { path: "/dev".into(), mode: 0o755 },
            Entry::File { path: "/init".into(), mode: 0o755, data: b"#!x".to_vec() },
            Entry::Symlink { path: "/sh".into(), target: "init".into() },
        ])
        .unwrap();
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        // The second header: mode 0100755, size 3, name "init".
        let i = a.windows(5).position(|w| w == b"init\0").unwrap();
        let h = &a[i - 110..i];
        assert_eq!(&h[14..22], b"000081ed");
        assert_eq!(&h[54..62], b"00000003");
        assert!(a.windows(11).any(|w| w == b"TRAILER!!!\0"));
        // GNU cpio reads it back.
        if std::process::Command::new("cpio").arg("--version").output().is_ok() {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("a.cpio");
            std::fs::write(&f, &a).unwrap();
            let out =
                std::process::Command::new("sh").arg("-c").arg(format!("cpio -it < {}", f.display())).output().unwrap();
            let list = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                list.lines().collect::<Vec<_>>(),
                ["dev", "init", "sh"],
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
