//! The encoding of everything wharf-raft writes: log entries, vote, state records and
//! snapshot records. postcard (a compact, non-self-describing serde format: varints, no field
//! names) replaced JSON in format version 1; version 2 keeps the same records in fjall instead of
//! sled. The version is recorded once per data dir (and in every snapshot file's header), not
//! per record: a node refuses a data dir or a snapshot of a version it does not know, and
//! migrates a version-0 (JSON) or version-1 (sled) data dir on first start.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version of the data dir format this build writes.
pub const FORMAT_VERSION: u32 = 2;

pub fn encode<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    // postcard only fails on types serde cannot describe without a length (none here).
    postcard::to_allocvec(v).expect("wharf records always encode")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
