//! Whole-file BLAKE3 from per-chunk subtree hashes: the node completes an upload, and a client
//! checks it, without reading the file again.
//!
//! Chunk sizes are powers of two of at least 1 KiB (BLAKE3's chunk), so every full chunk is a
//! complete subtree of the file's BLAKE3 tree and the left subtree of any node holds the largest
//! power-of-two number of our chunks below the total.

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// Hashes one chunk as it streams in: its own BLAKE3 (what a client sends in `x-wharf-blake3`)
/// and its chaining value at its offset in the file.
pub struct ChunkHasher {
    plain: blake3::Hasher,
    subtree: blake3::Hasher,
    empty: bool,
}

impl ChunkHasher {
    pub fn new(offset: u64) -> Self {
        let mut subtree = blake3::Hasher::new();
        subtree.set_input_offset(offset);
        Self {
            plain: blake3::Hasher::new(),
            subtree,
            empty: true,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.empty &= data.is_empty();
        self.plain.update(data);
        self.subtree.update(data);
    }

    /// `(blake3 of the chunk, chaining value)`, both hex. An empty chunk (only ever the one
    /// chunk of an empty file) has no subtree and so no chaining value.
    pub fn finish(self) -> (String, String) {
        let cv = if self.empty {
            String::new()
        } else {
            hex::encode(self.subtree.finalize_non_root())
        };
        (self.plain.finalize().to_hex().to_string(), cv)
    }
}

/// The file's BLAKE3 from its chunks: `(chunk blake3, chaining value)` in order, both hex.
pub fn whole_file(chunks: &[(&str, &str)]) -> Result<String, String> {
    match chunks {
        [] => Err("no chunks".into()),
        // A one-chunk file's hash is the chunk's own root hash.
        [(plain, _)] => Ok(plain.to_string()),
        _ => {
            let cvs = chunks
                .iter()
                .map(|(_, cv)| parse_cv(cv))
                .collect::<Result<Vec<_>, _>>()?;
            let (left, right) = split(&cvs);
            Ok(
                merge_subtrees_root(&subtree(left), &subtree(right), Mode::Hash)
                    .to_hex()
                    .to_string(),
            )
        }
    }
}

fn split(cvs: &[ChainingValue]) -> (&[ChainingValue], &[ChainingValue]) {
    cvs.split_at(cvs.len().next_power_of_two() / 2)
}

fn subtree(cvs: &[ChainingValue]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (left, right) = split(cvs);
    merge_subtrees_non_root(&subtree(left), &subtree(right), Mode::Hash)
}

fn parse_cv(s: &str) -> Result<ChainingValue, String> {
    let mut cv = [0u8; 32];
    hex::decode_to_slice(s, &mut cv).map_err(|e| format!("bad chaining value: {e}"))?;
    Ok(cv)
}

/// Parses a 64-character hex BLAKE3 digest.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn combined(data: &[u8], chunk: usize) -> String {
        let parts: Vec<(String, String)> = if data.is_empty() {
            vec![ChunkHasher::new(0).finish()]
        } else {
            data.chunks(chunk)
                .enumerate()
                .map(|(i, c)| {
                    let mut h = ChunkHasher::new((i * chunk) as u64);
                    h.update(c);
                    h.finish()
                })
                .collect()
        };
        let refs: Vec<(&str, &str)> = parts
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        whole_file(&refs).unwrap()
    }

    #[test]
    fn combined_hash_equals_blake3_of_the_whole_file() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for chunk in [1024usize, 2048, 4096] {
            for len in [
                0,
                1,
                1023,
                1024,
                1025,
                2048,
                3000,
                5 * 1024,
                7 * 1024 + 5,
                40_000,
            ] {
                let d = &data[..len];
                assert_eq!(
                    combined(d, chunk),
                    blake3::hash(d).to_hex().to_string(),
                    "len {len} chunk {chunk}"
                );
            }
        }
    }
}
