//! Backups of the metadata: a snapshot file of the state machine with what a restore needs
//! around it.
//!
//! A backup is `BACKUP_MAGIC`, the backup version (u32 LE), the header's length (u32 LE), the
//! header (JSON: the snapshot's meta, with its log id, and when the backup was made), the
//! snapshot file exactly as the store writes it (which checks its own records), and the BLAKE3
//! of every byte before it (32 bytes).

use std::io::{Read, Write};
use std::path::Path;

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use crate::{NodeId, WharfNode};

pub const BACKUP_MAGIC: &[u8; 8] = b"WHARFBAK";
const VERSION: u32 = 1;
/// No header is this large; a length above it means a damaged file.
const MAX_HEADER: u32 = 16 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupHeader {
    pub meta: SnapshotMeta<NodeId, WharfNode>,
    /// Unix milliseconds.
    pub created_at: u64,
}

/// Writes a backup of `snapshot` (a snapshot file's bytes) to `out`; answers its BLAKE3 (hex)
/// and its length.
pub fn write(
    out: impl Write,
    header: &BackupHeader,
    snapshot: &mut impl Read,
) -> std::io::Result<(String, u64)> {
    let head = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    let mut w = super::snapshot::HashingWriter {
        inner: out,
        hash: blake3::Hasher::new(),
    };
    w.write_all(BACKUP_MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    w.write_all(&(head.len() as u32).to_le_bytes())?;
    w.write_all(&head)?;
    let n = std::io::copy(snapshot, &mut w)?;
    let hash = w.hash.finalize();
    w.inner.write_all(hash.as_bytes())?;
    w.inner.flush()?;
    Ok((hash.to_hex().to_string(), 16 + head.len() as u64 + n + 32))
}

fn damaged(why: impl std::fmt::Display) -> crate::Error {
    crate::Error::Format(format!("not a whole wharf backup: {why}"))
}

/// Checks the backup at `path` whole (its BLAKE3) and writes its snapshot file to
/// `snapshot_out` (if given); answers its header and BLAKE3 (hex).
pub fn read(
    path: &Path,
    snapshot_out: Option<&Path>,
) -> Result<(BackupHeader, String), crate::Error> {
    let len = std::fs::metadata(path)?.len();
    if len < 16 + 32 {
        return Err(damaged("too short"));
    }
    // First the checksum, over every byte but its own.
    let mut f = std::fs::File::open(path)?;
    let mut hash = blake3::Hasher::new();
    std::io::copy(&mut (&mut f).take(len - 32), &mut hash)?;
    let mut want = [0u8; 32];
    f.read_exact(&mut want)?;
    let got = hash.finalize();
    if got.as_bytes() != &want {
        return Err(damaged(
            "its checksum does not match (a damaged or cut file)",
        ));
    }
    let mut f = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)?;
    if &magic != BACKUP_MAGIC {
        return Err(damaged("it does not start as one"));
    }
    let mut word = [0u8; 4];
    f.read_exact(&mut word)?;
    let version = u32::from_le_bytes(word);
    if version != VERSION {
        return Err(crate::Error::Format(format!(
            "backup version {version} is unknown to this wharf (it reads version {VERSION}): \
             restore it with the wharf that made it, or a newer one"
        )));
    }
    f.read_exact(&mut word)?;
    let head_len = u32::from_le_bytes(word);
    if head_len > MAX_HEADER || 16 + u64::from(head_len) + 32 > len {
        return Err(damaged("its header length is out of range"));
    }
    let mut head = vec![0u8; head_len as usize];
    f.read_exact(&mut head)?;
    let header: BackupHeader = serde_json::from_slice(&head).map_err(damaged)?;
    if let Some(snapshot_out) = snapshot_out {
        let body = len - 16 - u64::from(head_len) - 32;
        let mut out = std::fs::File::create(snapshot_out)?;
        std::io::copy(&mut f.take(body), &mut out)?;
        out.sync_all()?;
    }
    Ok((header, got.to_hex().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_reads_back_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let header = BackupHeader {
            meta: SnapshotMeta::default(),
            created_at: 7,
        };
        let snapshot = b"WHARFSNP and the records".to_vec();
        let mut bytes = Vec::new();
        let (hash, len) = write(&mut bytes, &header, &mut snapshot.as_slice()).unwrap();
        assert_eq!(len, bytes.len() as u64);
        let path = dir.path().join("b");
        std::fs::write(&path, &bytes).unwrap();
        let out = dir.path().join("snap");
        let (h, got) = read(&path, Some(&out)).unwrap();
        assert_eq!((h.created_at, got), (7, hash));
        assert_eq!(std::fs::read(&out).unwrap(), snapshot);
        // One flipped byte anywhere, or a cut file: refused.
        for at in [0, 9, 20, bytes.len() - 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            let err = read(&path, Some(&out)).unwrap_err().to_string();
            assert!(err.contains("not a whole wharf backup"), "{at}: {err}");
        }
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(read(&path, None).is_err());
    }
}
