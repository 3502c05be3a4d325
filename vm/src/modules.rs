//! Kernel modules: the closure of the modules a guest needs (overlay, fuse,
//! file systems) with their dependencies, read from each module's own
//! `.modinfo` section (Debian ships no `modules.dep`; depmod writes it at
//! install time), and the modules themselves, decompressed.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::VmError;

/// A module name as the kernel knows it (`-` and `_` are the same).
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(path: &Path) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = file.split(".ko").next().unwrap_or(&file);
    normalize(stem)
}

/// A kernel's module tree.
#[derive(Debug, Clone)]
pub struct ModuleTree {
    pub root: PathBuf,
    by_name: HashMap<String, PathBuf>,
    builtin: HashSet<String>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk(&p, out)?;
        } else if p.to_string_lossy().contains(".ko") {
            out.push(p);
        }
    }
    Ok(())
}

impl ModuleTree {
    /// `root` is `.../modules/<release>` (with `kernel/` and `modules.builtin`).
    pub fn open(root: &Path) -> Result<ModuleTree, VmError> {
        let io = |e: std::io::Error| VmError::Io { what: root.display().to_string(), source: e };
        let mut files = Vec::new();
        walk(&root.join("kernel"), &mut files).map_err(io)?;
        let by_name = files.into_iter().map(|p| (module_name(&p), p)).collect();
        let builtin = std::fs::read_to_string(root.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(|l| module_name(Path::new(l.trim())))
            .collect();
        Ok(ModuleTree { root: root.to_path_buf(), by_name, builtin })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The modules to load for `wanted`, dependencies first, built-in ones left out.
    pub fn closure(&self, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>, VmError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for w in wanted {
            self.visit(&normalize(w), &mut seen, &mut order, 0)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<(String, PathBuf)>,
        depth: usize,
    ) -> Result<(), VmError> {
        if depth > 64 || !seen.insert(name.to_string()) || self.is_builtin(name) {
            return Ok(());
        }
        let path = self
            .by_name
            .get(name)
            .ok_or_else(|| VmError::Deb(format!("module {name} is neither built in nor in {}", self.root.display())))?;
        let elf = read_module(path)?;
        for (k, v) in modinfo(&elf) {
            if k == "depends" {
                for d in v.split(',').filter(|d| !d.is_empty()) {
                    self.visit(&normalize(d), seen, order, depth + 1)?;
                }
            }
        }
        order.push((name.to_string(), path.clone()));
        Ok(())
    }
}

/// A module file's ELF bytes (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`).
pub fn read_module(path: &Path) -> Result<Vec<u8>, VmError> {
    let data = std::fs::read(path).map_err(|e| VmError::Io { what: path.display().to_string(), source: e })?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    let r = if name.ends_with(".xz") {
        xz2::read::XzDecoder::new(data.as_slice()).read_to_end(&mut out)
    } else if name.ends_with(".zst") {
        zstd::Decoder::new(data.as_slice()).and_then(|mut d| d.read_to_end(&mut out))
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(data.as_slice()).read_to_end(&mut out)
    } else {
        return Ok(data);
    };
    r.map_err(|e| VmError::Deb(format!("{name}: {e}")))?;
    Ok(out)
}

/// The `key=value` strings of an ELF64 module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Vec<(String, String)> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let u64_at =
        |o: usize| elf.get(o..o + 8).and_then(|b| b.try_into().ok()).map(|b: [u8; 8]| u64::from_le_bytes(b) as usize);
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        return Vec::new();
    }
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e))
    else {
        return Vec::new();
    };
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((u32_at(h)?, u64_at(h + 0x18)?, u64_at(h + 0x20)?))
    };
    let Some((_, stroff, strsize)) = section(shstrndx) else { return Vec::new() };
    let Some(strtab) = elf.get(stroff..stroff.saturating_add(strsize)) else { return Vec::new() };
    for i in 0..shnum {
        let Some((name_off, off, size)) = section(i) else { continue };
        let name = strtab.get(name_off..).and_then(|s| s.split(|&b| b == 0).next()).unwrap_or_default();
        if name == b".modinfo" {
            let Some(body) = elf.get(off..off.saturating_add(size)) else { return Vec::new() };
            return body
                .split(|&b| b == 0)
                .filter_map(|kv| {
                    let s = String::from_utf8_lossy(kv);
                    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 image with a `.modinfo` section.
    fn fake_module(info: &str) -> Vec<u8> {
        let shstr = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        let modinfo_off = elf.len();
        elf.extend_from_slice(info.as_bytes());
        let shstr_off = elf.len();
        elf.extend_from_slice(shstr);
        let shoff = elf.len();
        let sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        let null = sh(0, 0, 0);
        let mi = sh(1, modinfo_off, info.len());
        let st = sh(10, shstr_off, shstr.len());
        elf.extend(null);
        elf.extend(mi);
        elf.extend(st);
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    #[test]
    fn closure_orders_dependencies_first_and_skips_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kernel/fs");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(k.join("overlay.ko"), fake_module("license=GPL\0depends=exportfs,crc-x\0")).unwrap();
        std::fs::write(k.join("crc-x.ko"), fake_module("depends=\0")).unwrap();
        std::fs::write(dir.path().join("modules.builtin"), "kernel/fs/exportfs/exportfs.ko\n").unwrap();
        let t = ModuleTree::open(dir.path()).unwrap();
        let names: Vec<String> = t.closure(&["overlay"]).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["crc_x", "overlay"]);
        assert!(t.closure(&["nosuch"]).is_err());
        assert_eq!(modinfo(b"not elf"), Vec::new());
    }
}
