//! Snapshot files.
//!
//! A file is `SNAPSHOT_MAGIC`, the snapshot version (u32 LE), then records `(u32 LE key length,
//! key, u32 LE value length, value)` in key order, then `u32::MAX` and the BLAKE3 of every byte
//! before it (uncompressed). From version 2 on, everything after the version is one zstd stream
//! (version 1, written before, is read too). It is written and read as a stream: neither side
//! holds the state in memory.
//!
//! The records are the `state` keyspace as of the moment the build began, read from the live
//! keyspace while writes keep being applied (see `state_machine::Building`), so the file is
//! exactly the state at the log id the build began at.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use crate::{NodeId, WharfNode};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"WHARFSNP";
/// Snapshot versions (the records inside are the same from data dir format version 1 on).
const PLAIN: u32 = 1;
const COMPRESSED: u32 = 2;
/// zstd's fastest level: the records (hex ids and hashes, repeated key prefixes) shrink to
/// about a third already, and the build stays cheap.
const ZSTD_LEVEL: i32 = 1;
const END: u32 = u32::MAX;
/// No record is this large; a length above it means a corrupt file.
const MAX_RECORD: usize = 256 << 20;
/// Records read from the view at a time.
pub(crate) const PAGE: usize = 1024;

/// Where the current snapshot is (in the `raft` tree).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pointer {
    pub meta: SnapshotMeta<NodeId, WharfNode>,
    /// File name under `snapshots/`, made by this node (never taken from a peer).
    pub file: String,
}

/// Writes a snapshot file from `pages` (called until it returns an empty page).
pub fn write_file(
    path: &Path,
    mut pages: impl FnMut() -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>>,
) -> std::io::Result<u64> {
    let file = std::fs::File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(SNAPSHOT_MAGIC)?;
    out.write_all(&COMPRESSED.to_le_bytes())?;
    let mut hash = blake3::Hasher::new();
    hash.update(SNAPSHOT_MAGIC);
    hash.update(&COMPRESSED.to_le_bytes());
    let mut w = HashingWriter {
        inner: zstd::Encoder::new(out, ZSTD_LEVEL)?,
        hash,
    };
    let mut n = 0;
    loop {
        let page = pages()?;
        if page.is_empty() {
            break;
        }
        for (k, v) in page {
            w.write_all(&(k.len() as u32).to_le_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_le_bytes())?;
            w.write_all(&v)?;
            n += 1;
        }
    }
    w.write_all(&END.to_le_bytes())?;
    let sum = *w.hash.finalize().as_bytes();
    let mut zstd = w.inner;
    zstd.write_all(&sum)?;
    let out = zstd.finish()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(n)
}

/// A writer that hashes what it writes (snapshot and backup files end with their BLAKE3).
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hash: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Reads a snapshot file, calling `visit` with every record in order, and checks its version
/// and checksum. With `visit` doing nothing this is the check made before an install.
pub fn read_file(
    path: &Path,
    mut visit: impl FnMut(Vec<u8>, Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let mut file = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; 12];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("snapshot file ends early: {e}")))?;
    if &header[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a wharf snapshot (bad magic bytes)"));
    }
    let version = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
    let mut r: Box<dyn Read> = match version {
        PLAIN => Box::new(file),
        COMPRESSED => Box::new(zstd::Decoder::with_buffer(file)?),
        _ => {
            return Err(bad(format!(
                "snapshot version {version} is not supported by this wharf (it reads versions \
                 {PLAIN} and {COMPRESSED})"
            )))
        }
    };
    let mut hash = blake3::Hasher::new();
    hash.update(&header);
    let mut read = |n: usize, hash: &mut blake3::Hasher| -> std::io::Result<Vec<u8>> {
        if n > MAX_RECORD {
            return Err(bad(format!(
                "snapshot record of {n} bytes: the file is corrupt"
            )));
        }
        let mut buf = vec![0u8; n];
        r.read_exact(&mut buf)
            .map_err(|e| bad(format!("snapshot file is damaged or ends early: {e}")))?;
        hash.update(&buf);
        Ok(buf)
    };
    let mut n = 0;
    loop {
        let len = u32::from_le_bytes(read(4, &mut hash)?.try_into().expect("4 bytes"));
        if len == END {
            break;
        }
        let k = read(len as usize, &mut hash)?;
        let vlen = u32::from_le_bytes(read(4, &mut hash)?.try_into().expect("4 bytes"));
        let v = read(vlen as usize, &mut hash)?;
        visit(k, v)?;
        n += 1;
    }
    let expected = *hash.finalize().as_bytes();
    let mut sum = [0u8; 32];
    r.read_exact(&mut sum)
        .map_err(|e| bad(format!("snapshot file has no checksum: {e}")))?;
    if sum != expected {
        return Err(bad("snapshot checksum does not match its contents"));
    }
    Ok(n)
}
