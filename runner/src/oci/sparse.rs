//! Sparse members, in the formats GNU tar writes: the PAX records of 0.0,
//! 0.1 and 1.0 (and the map that starts a 1.0 member's data), checked
//! against the file's size and the data stored.

use std::io::Read;

use super::spec::show;
use super::stream::ReadFail;

/// How a member of a PAX sparse format (GNU tar's 0.0, 0.1 and 1.0) is laid out.
pub(super) struct PaxSparse {
    /// The real name (`GNU.sparse.name`), when given.
    pub(super) name: Option<Vec<u8>>,
    /// `(offset, length)` of each stored chunk; `None` for 1.0, whose map
    /// starts the member's data.
    pub(super) map: Option<Vec<(u64, u64)>>,
    /// The file's size.
    pub(super) size: u64,
}

/// Why a member's records are malformed (the caller names the member).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Bad(String);

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(why: impl Into<String>) -> Result<T, Bad> {
    Err(Bad(why.into()))
}

fn pax_number(key: &str, v: &[u8]) -> Result<u64, Bad> {
    std::str::from_utf8(v)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Bad(format!("its PAX record {key} is not a number")))
}

/// The sparse layout the PAX records describe, if any.
pub(super) fn pax_sparse(pax: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<PaxSparse>, Bad> {
    if !pax.iter().any(|(k, _)| k.starts_with(b"GNU.sparse.")) {
        return Ok(None);
    }
    let get = |k: &str| pax.iter().rev().find(|(key, _)| key == k.as_bytes()).map(|(_, v)| v.as_slice());
    let name = get("GNU.sparse.name").map(<[u8]>::to_vec);
    let size =
        |k: &str| get(k).ok_or_else(|| Bad(format!("its sparse records have no {k}"))).and_then(|v| pax_number(k, v));
    match (get("GNU.sparse.major"), get("GNU.sparse.minor")) {
        (Some(b"1"), Some(b"0")) => return Ok(Some(PaxSparse { name, map: None, size: size("GNU.sparse.realsize")? })),
        (None, None) => {}
        (ma, mi) => {
            return bad(format!(
                "its sparse format {}.{} is not one GNU tar writes (0.0, 0.1, 1.0)",
                show(ma.unwrap_or(b"?")),
                show(mi.unwrap_or(b"?"))
            ))
        }
    }
    let mut map = Vec::new();
    if let Some(m) = get("GNU.sparse.map") {
        let nums: Vec<u64> =
            m.split(|&b| b == b',').map(|n| pax_number("GNU.sparse.map", n)).collect::<Result<_, _>>()?;
        if !nums.len().is_multiple_of(2) {
            return bad("its GNU.sparse.map has an odd count of numbers");
        }
        map.extend(nums.chunks(2).map(|c| (c[0], c[1])));
    } else {
        // 0.0: GNU.sparse.offset and GNU.sparse.numbytes records in pairs, in order.
        let mut pending = None;
        for (k, v) in pax {
            match k.as_slice() {
                b"GNU.sparse.offset" if pending.is_none() => pending = Some(pax_number("GNU.sparse.offset", v)?),
                b"GNU.sparse.numbytes" if pending.is_some() => {
                    map.push((pending.take().unwrap_or(0), pax_number("GNU.sparse.numbytes", v)?))
                }
                b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                    return bad("its GNU.sparse.offset and GNU.sparse.numbytes records do not pair up")
                }
                _ => {}
            }
        }
        if pending.is_some() {
            return bad("its GNU.sparse.offset and GNU.sparse.numbytes records do not pair up");
        }
    }
    if let Some(n) = get("GNU.sparse.numblocks") {
        if pax_number("GNU.sparse.numblocks", n)? != map.len() as u64 {
            return bad("its GNU.sparse.numblocks does not match its map");
        }
    }
    Ok(Some(PaxSparse { name, map: Some(map), size: size("GNU.sparse.size")? }))
}

/// Checks a sparse map against the file's size and the data stored.
pub(super) fn check_sparse_map(map: &[(u64, u64)], size: u64, stored: u64) -> Result<(), Bad> {
    let (mut end, mut total) = (0u64, 0u64);
    for &(off, len) in map {
        let e = off.checked_add(len).filter(|&e| off >= end && e <= size);
        end =
            e.ok_or_else(
                || Bad("its sparse map has chunks out of order, overlapping, or past the file's size".into()),
            )?;
        total += len;
    }
    if total != stored {
        return bad(format!("its sparse map lists {total} bytes of data but it stores {stored}"));
    }
    Ok(())
}

/// Reads the map that starts a 1.0 sparse member's data: the count of chunks,
/// then offset and length of each, one decimal number a line, padded to a
/// 512-byte block. Returns the map and the bytes it took.
pub(super) fn read_sparse_map_v1(r: &mut impl Read, stored: u64) -> Result<(Vec<(u64, u64)>, u64), ReadFail> {
    const LIMIT: usize = 16 << 20;
    let mut buf: Vec<u8> = Vec::new();
    let mut block = [0u8; 512];
    loop {
        let lines = buf.iter().filter(|&&b| b == b'\n').count();
        if lines >= 1 {
            let first = buf.split(|&b| b == b'\n').next().unwrap_or_default();
            let count =
                pax_number("map count", first).map_err(|_| ReadFail::Bad("its sparse map is malformed".into()))?;
            if count > (LIMIT / 4) as u64 {
                return Err(ReadFail::Bad("its sparse map is malformed".into()));
            }
            if lines as u64 > 2 * count {
                let nums: Vec<u64> = buf
                    .split(|&b| b == b'\n')
                    .skip(1)
                    .take(2 * count as usize)
                    .map(|n| pax_number("map", n))
                    .collect::<Result<_, _>>()
                    .map_err(|_| ReadFail::Bad("its sparse map is malformed".into()))?;
                return Ok((nums.chunks(2).map(|c| (c[0], c[1])).collect(), buf.len() as u64));
            }
        }
        if buf.len() >= LIMIT || buf.len() as u64 + 512 > stored {
            return Err(ReadFail::Bad("its sparse map is malformed".into()));
        }
        let mut got = 0;
        while got < 512 {
            match r.read(&mut block[got..]) {
                Ok(0) => return Err(ReadFail::Short),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadFail::Io(e)),
            }
        }
        buf.extend_from_slice(&block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_records_are_checked() {
        let rec = |pairs: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
            pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
        };
        assert!(matches!(pax_sparse(&rec(&[("path", "x")])), Ok(None)), "no sparse records");
        let v01 = pax_sparse(&rec(&[("GNU.sparse.map", "0,10,100,5"), ("GNU.sparse.size", "200")]));
        let v01 = v01.ok().flatten().unwrap_or_else(|| panic!("0.1 parses"));
        assert_eq!((v01.map.as_deref(), v01.size), (Some(&[(0, 10), (100, 5)][..]), 200));
        let odd = pax_sparse(&rec(&[("GNU.sparse.map", "0,10,100"), ("GNU.sparse.size", "200")]));
        assert!(odd.is_err_and(|b| b.to_string().contains("odd count")));
        let v10 =
            pax_sparse(&rec(&[("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.realsize", "9")]));
        assert!(v10.is_ok_and(|s| s.is_some_and(|s| s.map.is_none() && s.size == 9)));
        assert!(pax_sparse(&rec(&[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")])).is_err());
        assert!(check_sparse_map(&[(0, 10), (100, 5)], 200, 15).is_ok());
        assert!(check_sparse_map(&[(100, 5), (0, 10)], 200, 15).is_err(), "out of order");
        assert!(check_sparse_map(&[(190, 20)], 200, 20).is_err(), "past the end");
        assert!(check_sparse_map(&[(0, 10)], 200, 11).is_err_and(|b| b.to_string().contains("stores 11")));
    }
}
