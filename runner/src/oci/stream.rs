//! Reading a layer: its compression undone, its stream tracked (where the
//! reader is, how many header bytes it may still consume, whether it hit the
//! end) so that a truncated or hostile archive is refused with the place.

use std::cell::Cell;
use std::io::{BufRead, Read, Seek, Write};
use std::path::Path;
use std::rc::Rc;

use super::spec::io;
use crate::error::OciError;

/// Opens a layer file, undoing gzip or zstd compression (recognised by magic bytes).
pub fn open_layer(path: &Path) -> Result<Box<dyn Read>, OciError> {
    let name = path.display();
    let f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => OciError::Refused(format!("{name}: no such file")),
        _ => OciError::Io { what: format!("opening {name}"), source: e },
    })?;
    if f.metadata().map_err(io(format!("stat {name}")))?.is_dir() {
        return Err(OciError::Refused(format!("{name} is a directory, not a layer file")));
    }
    let mut r = std::io::BufReader::with_capacity(1 << 16, f);
    let magic = r.fill_buf().map_err(io(format!("reading {name}")))?;
    Ok(match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::GzDecoder::new(r)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::Decoder::with_buffer(r).map_err(io("zstd"))?),
        _ => Box::new(r),
    })
}

/// Bytes the tar reader may consume to reach the next member (headers, PAX
/// records, long names, the data of members it skips) before the layer is
/// refused: the tar crate reads such records whole into memory.
pub(super) const HEADER_BUDGET: u64 = 64 << 20;

/// What the layer stream did, shared between the reader the tar crate pulls
/// from and the applier (which cannot reach that reader while it iterates).
#[derive(Default)]
pub(super) struct Stream {
    /// Bytes read (of the tar stream, after decompression).
    pub(super) pos: Cell<u64>,
    /// Reads past this fail (see [`HEADER_BUDGET`]).
    pub(super) limit: Cell<u64>,
    pub(super) over_budget: Cell<bool>,
    /// The stream ended.
    pub(super) eof: Cell<bool>,
    /// The system's error reading the file: infrastructure, not the layer's fault.
    pub(super) os_error: Cell<Option<i32>>,
    /// The decompressor's error: corrupt gzip or zstd data.
    pub(super) decode_error: Cell<bool>,
    /// Whether the first block carries the ustar magic (a tar header, even
    /// when it fails its checksum).
    pub(super) ustar_magic: Cell<bool>,
}

pub(super) struct Tracked<R> {
    pub(super) inner: R,
    pub(super) st: Rc<Stream>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let st = &self.st;
        let room = st.limit.get().saturating_sub(st.pos.get());
        if room == 0 {
            st.over_budget.set(true);
            return Err(std::io::Error::other("over the header budget"));
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                st.eof.set(true);
                Ok(0)
            }
            Ok(n) => {
                let at = st.pos.get();
                // "ustar" at byte 257 of the first block (POSIX and GNU headers).
                if at <= 257 && at + n as u64 >= 262 {
                    let i = (257 - at) as usize;
                    st.ustar_magic.set(&buf[i..i + 5] == b"ustar");
                }
                st.pos.set(at + n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                match e.raw_os_error() {
                    Some(code) => st.os_error.set(Some(code)),
                    None => st.decode_error.set(true),
                }
                Err(e)
            }
        }
    }
}

/// A failed read of a member's data.
pub(super) enum ReadFail {
    /// The stream ended first.
    Short,
    Io(std::io::Error),
    Bad(String),
}

/// Copies exactly `len` bytes of a member's data into `f` at its position;
/// with `holes`, blocks of zeros are skipped (left as holes).
pub(super) fn copy_exact(
    from: &mut impl Read,
    f: &mut std::fs::File,
    len: u64,
    holes: bool,
) -> Result<(), Result<ReadFail, std::io::Error>> {
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => return Err(Ok(ReadFail::Short)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Ok(ReadFail::Io(e))),
        };
        let chunk = &buf[..n];
        if holes && chunk.iter().all(|&b| b == 0) {
            f.seek(std::io::SeekFrom::Current(n as i64)).map_err(Err)?;
        } else {
            f.write_all(chunk).map_err(Err)?;
        }
        left -= n as u64;
    }
    Ok(())
}
