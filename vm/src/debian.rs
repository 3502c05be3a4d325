//! Debian's archive: the mirror from the machine's apt configuration, the
//! `Release` and `Packages` indexes, version comparison, and `.deb` files.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::VmError;

/// The environment variable that overrides the mirror (`http://...`, `https://...` or `file:///...`).
pub const MIRROR_ENV: &str = "OVLC_DEBIAN_MIRROR";

/// The first Debian archive named by apt's configuration: one-line
/// `sources.list` files and deb822 `.sources` files, main archive first
/// (not the security or backports archives).
pub fn mirror_from_apt(root: &Path) -> Option<String> {
    let mut uris: Vec<String> = Vec::new();
    let mut files = vec![root.join("etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir(root.join("etc/apt/sources.list.d")) {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        let name = f.to_string_lossy();
        if name.ends_with(".sources") {
            uris.extend(deb822_uris(&text));
        } else if name.ends_with(".list") {
            uris.extend(one_line_uris(&text));
        }
    }
    uris.into_iter().find(|u| !u.contains("security") && !u.contains("backports") && u.contains("debian"))
}

/// `deb [options] URI suite components` lines.
pub fn one_line_uris(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("deb ") || l.starts_with("deb\t"))
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip(1).peekable();
            if words.peek().is_some_and(|w| w.starts_with('[')) {
                for w in words.by_ref() {
                    if w.ends_with(']') {
                        break;
                    }
                }
            }
            words.next().map(|u| u.trim_end_matches('/').to_string())
        })
        .collect()
}

/// `URIs:` of deb822 stanzas whose `Types:` include `deb` and that are not `Enabled: no`.
pub fn deb822_uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in paragraphs(text) {
        let types = stanza.get("Types").map(String::as_str).unwrap_or("");
        if !types.split_whitespace().any(|t| t == "deb") || stanza.get("Enabled").is_some_and(|e| e == "no") {
            continue;
        }
        if let Some(u) = stanza.get("URIs") {
            out.extend(u.split_whitespace().map(|u| u.trim_end_matches('/').to_string()));
        }
    }
    out
}

/// Splits deb822 text (Release, Packages, .sources) into field maps;
/// continuation lines are joined with newlines; `#` comment lines are skipped.
pub fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(k) = &last {
                if let Some(v) = cur.get_mut(k) {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.trim().to_string(), v.trim().to_string());
            last = Some(k.trim().to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The `SHA256:` section of a `Release` file: path → (size, sha256).
pub fn release_sha256(release: &str) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    let Some(p) = paragraphs(release).into_iter().next() else { return out };
    if let Some(block) = p.get("SHA256") {
        for l in block.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if let [sum, size, path] = w[..] {
                out.insert(path.to_string(), (size.parse().unwrap_or(0), sum.to_string()));
            }
        }
    }
    out
}

/// One binary package of an index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

/// Packages of a `Packages` index, by name (every version).
pub fn packages(text: &str) -> Vec<Package> {
    paragraphs(text)
        .into_iter()
        .filter_map(|p| {
            Some(Package {
                name: p.get("Package")?.clone(),
                version: p.get("Version")?.clone(),
                filename: p.get("Filename")?.clone(),
                size: p.get("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                sha256: p.get("SHA256")?.clone(),
            })
        })
        .collect()
}

/// dpkg's version order (`epoch:upstream-revision`, `~` before everything).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<char>) -> i32 {
        match c {
            None => 0,
            Some('~') => -1,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &str, b: &str) -> std::cmp::Ordering {
        let (mut a, mut b) = (a, b);
        loop {
            if a.is_empty() && b.is_empty() {
                return std::cmp::Ordering::Equal;
            }
            // Non-digit prefix, compared with dpkg's character order.
            let an = a.find(|c: char| c.is_ascii_digit()).unwrap_or(a.len());
            let bn = b.find(|c: char| c.is_ascii_digit()).unwrap_or(b.len());
            let (ap, bp) = (&a[..an], &b[..bn]);
            let (mut ai, mut bi) = (ap.chars(), bp.chars());
            loop {
                let (x, y) = (ai.next(), bi.next());
                if x.is_none() && y.is_none() {
                    break;
                }
                let o = order(x).cmp(&order(y));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            a = &a[an..];
            b = &b[bn..];
            let ad = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
            let bd = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
            let x: u128 = a[..ad].parse().unwrap_or(0);
            let y: u128 = b[..bd].parse().unwrap_or(0);
            if x != y {
                return x.cmp(&y);
            }
            a = &a[ad..];
            b = &b[bd..];
        }
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb).then_with(|| part(ua, ub)).then_with(|| part(ra, rb))
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads a URL (`http(s)://` or `file://`) into memory.
pub fn fetch(url: &str) -> Result<Vec<u8>, VmError> {
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::read(path).map_err(|e| VmError::Fetch { url: url.to_string(), why: e.to_string() });
    }
    let resp = ureq::get(url).call().map_err(|e| VmError::Fetch { url: url.to_string(), why: e.to_string() })?;
    let mut body = Vec::new();
    resp.into_body()
        .into_reader()
        .take(1 << 31)
        .read_to_end(&mut body)
        .map_err(|e| VmError::Fetch { url: url.to_string(), why: e.to_string() })?;
    Ok(body)
}

/// Undoes an index's compression.
type Decompress = fn(&[u8]) -> std::io::Result<Vec<u8>>;

/// A suite's package index, verified against its `Release` file.
pub fn suite_packages(mirror: &str, suite: &str) -> Result<Vec<Package>, VmError> {
    let rel_url = format!("{mirror}/dists/{suite}/Release");
    let release = String::from_utf8_lossy(&fetch(&rel_url)?).into_owned();
    let sums = release_sha256(&release);
    let (path, decompress): (&str, Decompress) = if sums.contains_key("main/binary-amd64/Packages.xz") {
        ("main/binary-amd64/Packages.xz", |b| {
            let mut out = Vec::new();
            xz2::read::XzDecoder::new(b).read_to_end(&mut out)?;
            Ok(out)
        })
    } else {
        ("main/binary-amd64/Packages.gz", |b| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(b).read_to_end(&mut out)?;
            Ok(out)
        })
    };
    let (size, sum) =
        sums.get(path).cloned().ok_or_else(|| VmError::Index(format!("{rel_url} lists no SHA256 for {path}")))?;
    let url = format!("{mirror}/dists/{suite}/{path}");
    let data = fetch(&url)?;
    let got = sha256_hex(&data);
    if got != sum || data.len() as u64 != size {
        return Err(VmError::Checksum { what: url, expected: sum, got });
    }
    let text = decompress(&data).map_err(|e| VmError::Index(format!("{url}: {e}")))?;
    Ok(packages(&String::from_utf8_lossy(&text)))
}

/// The members of an `ar` archive (a `.deb`): name → bytes.
pub fn ar_members(data: &[u8]) -> Result<Vec<(String, &[u8])>, VmError> {
    let bad = |why: &str| VmError::Deb(why.to_string());
    let mut rest = data.strip_prefix(b"!<arch>\n").ok_or_else(|| bad("not an ar archive (no !<arch> magic)"))?;
    let mut out = Vec::new();
    while rest.len() >= 60 {
        let h = &rest[..60];
        if &h[58..60] != b"`\n" {
            return Err(bad("an ar header is damaged"));
        }
        let name = String::from_utf8_lossy(&h[..16]).trim().trim_end_matches('/').to_string();
        let size: usize =
            String::from_utf8_lossy(&h[48..58]).trim().parse().map_err(|_| bad("an ar member size is not a number"))?;
        let body =
            rest.get(60..60 + size).ok_or_else(|| bad("an ar member runs past the end (truncated download?)"))?;
        out.push((name, body));
        let next = 60 + size + (size % 2);
        rest = rest.get(next..).unwrap_or(&[]);
    }
    Ok(out)
}

/// The `data.tar*` member of a `.deb`, decompressed.
pub fn deb_data(deb: &[u8]) -> Result<Vec<u8>, VmError> {
    for (name, body) in ar_members(deb)? {
        let mut out = Vec::new();
        let r: std::io::Result<usize> = match name.as_str() {
            "data.tar.xz" => xz2::read::XzDecoder::new(body).read_to_end(&mut out),
            "data.tar.zst" => zstd::Decoder::new(body).and_then(|mut d| d.read_to_end(&mut out)),
            "data.tar.gz" => flate2::read::GzDecoder::new(body).read_to_end(&mut out),
            "data.tar" => {
                out.extend_from_slice(body);
                Ok(body.len())
            }
            _ => continue,
        };
        r.map_err(|e| VmError::Deb(format!("{name}: {e}")))?;
        return Ok(out);
    }
    Err(VmError::Deb("no data.tar member".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn versions_compare_like_dpkg() {
        assert_eq!(compare_versions("5.10.223-1", "5.10.218-1"), Greater);
        assert_eq!(compare_versions("7.3~rc7-1~exp1", "7.3-1"), Less);
        assert_eq!(compare_versions("1:1.0", "2.0"), Greater);
        assert_eq!(compare_versions("6.1.0-10", "6.1.0-9"), Greater);
        assert_eq!(compare_versions("1.0a", "1.0"), Greater);
        assert_eq!(compare_versions("1.0~", "1.0"), Less);
        assert_eq!(compare_versions("7.2.13-1", "7.2.13-1"), Equal);
    }

    #[test]
    fn apt_sources_in_both_formats() {
        let one = "# comment\ndeb http://deb.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] https://m.example/debian/ trixie main\ndeb-src http://src/ x main\n";
        assert_eq!(one_line_uris(one), ["http://deb.example/debian", "https://m.example/debian"]);
        let d822 = "Types: deb\n# note\nURIs: http://deb.example/debian\nSuites: bookworm\nComponents: main\n\nTypes: deb-src\nURIs: http://src.example/debian\n\nTypes: deb\nURIs: http://off.example/debian\nEnabled: no\n";
        assert_eq!(deb822_uris(d822), ["http://deb.example/debian"]);
    }

    #[test]
    fn mirror_skips_security_archives() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/apt/sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("etc/apt/sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://sec.example/debian-security\nSuites: x\n\nTypes: deb\nURIs: http://main.example/debian\nSuites: x\n",
        )
        .unwrap();
        assert_eq!(mirror_from_apt(dir.path()).as_deref(), Some("http://main.example/debian"));
    }

    #[test]
    fn release_and_packages_parse() {
        let release = "Origin: Debian\nSHA256:\n 0123 42 main/binary-amd64/Packages.xz\n 4567 7 main/Contents-all\n";
        let s = release_sha256(release);
        assert_eq!(s["main/binary-amd64/Packages.xz"], (42, "0123".to_string()));
        let pk = "Package: a\nVersion: 1\nFilename: pool/a.deb\nSize: 3\nSHA256: ff\nDescription: x\n more\n\nPackage: b\nVersion: 2\n";
        let p = packages(pk);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].filename, "pool/a.deb");
    }

    #[test]
    fn ar_members_refuse_truncation() {
        let mut ar = b"!<arch>\n".to_vec();
        ar.extend_from_slice(
            format!("{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", "debian-binary", 0, 0, 0, 100644, 4).as_bytes(),
        );
        ar.extend_from_slice(b"2.0\n");
        assert_eq!(ar_members(&ar).unwrap()[0].0, "debian-binary");
        let cut = &ar[..ar.len() - 2];
        assert!(ar_members(cut).is_err());
        assert!(ar_members(b"garbage").is_err());
    }
}
