//! The storage interface the model reads and writes through: ordered bytes to bytes.
//!
//! `apply` sees nothing but this interface, so it stays pure: the same commands over the same
//! contents give the same answers and the same writes, whether the contents live in a
//! `BTreeMap` ([`MemKv`], for the model tests) or in sled (the node's state machine, which
//! buffers a batch's writes and commits them with the last-applied log id in one sled batch).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// Read access: point lookups and ordered scans by prefix.
pub trait Kv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;

    /// Calls `visit` with every entry whose key starts with `prefix`, in key order, starting
    /// after `after` (a whole key) when given, until `visit` returns `false`.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    );

    /// The [`SetHash`] of the model's records (keys below `0xff`), when the store keeps one
    /// current; `None` makes the caller compute it by a scan.
    fn digest(&self) -> Option<SetHash> {
        None
    }
}

/// A digest of a set of (key, value) records that can be updated one record at a time: the
/// wrapping sum of every record's BLAKE3, so the order records were written in does not matter
/// and a store can keep it current as it commits, instead of reading everything to compute it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetHash([u64; 4]);

impl SetHash {
    fn lanes(key: &[u8], value: &[u8]) -> [u64; 4] {
        let mut h = blake3::Hasher::new();
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key);
        h.update(value);
        let b = h.finalize();
        let b = b.as_bytes();
        std::array::from_fn(|i| {
            u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        })
    }
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        for (a, l) in self.0.iter_mut().zip(Self::lanes(key, value)) {
            *a = a.wrapping_add(l);
        }
    }
    pub fn remove(&mut self, key: &[u8], value: &[u8]) {
        for (a, l) in self.0.iter_mut().zip(Self::lanes(key, value)) {
            *a = a.wrapping_sub(l);
        }
    }
    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, l) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&l.to_le_bytes());
        }
        out
    }
    pub fn from_bytes(b: &[u8]) -> Self {
        let mut s = Self::default();
        for (i, l) in s.0.iter_mut().enumerate() {
            if let Some(chunk) = b.get(i * 8..i * 8 + 8) {
                *l = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            }
        }
        s
    }
    pub fn to_hex(self) -> String {
        hex_string(&self.to_bytes())
    }
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Write access.
pub trait KvMut: Kv {
    fn put(&mut self, key: &[u8], value: Vec<u8>);
    fn delete(&mut self, key: &[u8]);
}

impl<T: Kv + ?Sized> Kv for &T {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        (**self).get(key)
    }
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        (**self).scan(prefix, after, visit)
    }
    fn digest(&self) -> Option<SetHash> {
        (**self).digest()
    }
}

impl<T: Kv + ?Sized> Kv for &mut T {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        (**self).get(key)
    }
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        (**self).scan(prefix, after, visit)
    }
    fn digest(&self) -> Option<SetHash> {
        (**self).digest()
    }
}

impl<T: KvMut + ?Sized> KvMut for &mut T {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        (**self).put(key, value)
    }
    fn delete(&mut self, key: &[u8]) {
        (**self).delete(key)
    }
}

/// The lower bound of a scan: the first key after `after`, or the prefix itself.
pub fn scan_start(prefix: &[u8], after: Option<&[u8]>) -> Bound<Vec<u8>> {
    match after {
        Some(a) if a >= prefix => Bound::Excluded(a.to_vec()),
        _ => Bound::Included(prefix.to_vec()),
    }
}

/// Contents in memory: the reference implementation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemKv(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        for (k, v) in self.0.range((scan_start(prefix, after), Bound::Unbounded)) {
            if !k.starts_with(prefix) || !visit(k, v) {
                break;
            }
        }
    }
}

impl KvMut for MemKv {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.0.insert(key.to_vec(), value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.0.remove(key);
    }
}

/// Writes buffered over a base: reads see the buffered writes first. The sled state machine
/// applies a batch of entries through one of these and then commits `writes` atomically.
pub struct Overlay<B> {
    pub base: B,
    /// `None` is a deletion.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What point reads found in the base, by key. Most keys a command writes it read first:
    /// the commit, which needs each written key's old value (for the digest), finds it here
    /// instead of reading the tree again.
    read: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl<B: Kv> Overlay<B> {
    pub fn new(base: B) -> Self {
        Self {
            base,
            writes: BTreeMap::new(),
            read: RefCell::default(),
        }
    }

    /// The buffered writes, and what point reads found in the base (its values as they are
    /// until the writes commit).
    pub fn into_parts(self) -> (Writes, BaseReads) {
        (self.writes, self.read.into_inner())
    }
}

/// A batch of buffered writes (`None` is a deletion).
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// Values read from a base, by key (`None`: it had none).
pub type BaseReads = HashMap<Vec<u8>, Option<Vec<u8>>>;

impl<B: Kv> Kv for Overlay<B> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(w) = self.writes.get(key) {
            return w.clone();
        }
        if let Some(v) = self.read.borrow().get(key) {
            return v.clone();
        }
        let v = self.base.get(key);
        self.read.borrow_mut().insert(key.to_vec(), v.clone());
        v
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        // Merge the buffered writes (in order) into the base's scan; a buffered write wins.
        let mut pending = self
            .writes
            .range((scan_start(prefix, after), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut go_on = true;
        self.base.scan(prefix, after, &mut |k, v| {
            while let Some((wk, wv)) = pending.peek() {
                if wk.as_slice() > k {
                    break;
                }
                let same = wk.as_slice() == k;
                if let Some(wv) = wv {
                    if !visit(wk, wv) {
                        go_on = false;
                        return false;
                    }
                }
                pending.next();
                if same {
                    return true;
                }
            }
            go_on = visit(k, v);
            go_on
        });
        if go_on {
            for (wk, wv) in pending {
                if let Some(wv) = wv {
                    if !visit(wk, wv) {
                        break;
                    }
                }
            }
        }
    }
}

impl<B: Kv> KvMut for Overlay<B> {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.writes.insert(key.to_vec(), Some(value));
    }
    fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(kv: &impl Kv, prefix: &[u8], after: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        kv.scan(prefix, after, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        });
        out
    }

    #[test]
    fn an_overlay_scans_like_the_map_it_would_become() {
        let mut base = MemKv::default();
        for k in ["a/1", "a/3", "a/5", "b/1"] {
            base.put(k.as_bytes(), k.as_bytes().to_vec());
        }
        let mut merged = base.clone();
        let mut o = Overlay::new(&base);
        for (k, v) in [
            ("a/0", Some("x")),
            ("a/3", None),
            ("a/4", Some("y")),
            ("a/5", Some("z")),
            ("a/9", Some("w")),
        ] {
            match v {
                Some(v) => {
                    o.put(k.as_bytes(), v.as_bytes().to_vec());
                    merged.put(k.as_bytes(), v.as_bytes().to_vec());
                }
                None => {
                    o.delete(k.as_bytes());
                    merged.delete(k.as_bytes());
                }
            }
        }
        for after in [
            None,
            Some(&b"a/0"[..]),
            Some(b"a/3"),
            Some(b"a/45"),
            Some(b"a/9"),
        ] {
            assert_eq!(
                collect(&o, b"a/", after),
                collect(&merged, b"a/", after),
                "{after:?}"
            );
        }
        assert_eq!(o.get(b"a/3"), None);
        assert_eq!(o.get(b"a/1"), Some(b"a/1".to_vec()));
        assert_eq!(o.get(b"b/7"), None);
        // The base's values as they were, for the keys read from it (not from the writes).
        let (_, read) = o.into_parts();
        assert_eq!(read.get(&b"a/1"[..]), Some(&Some(b"a/1".to_vec())));
        assert_eq!(read.get(&b"b/7"[..]), Some(&None));
        assert_eq!(read.get(&b"a/3"[..]), None);
    }
}
