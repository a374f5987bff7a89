//! The local object store: objects as directories under a root (one host, or a directory all
//! nodes share).

use std::io;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::store::{sync_dir, ByteStream, ObjectStore, PendingMultipart};

/// Objects as directories under a root (one host, or a directory all nodes share): an object is
/// its parts, as the nodes staged them, plus a manifest that orders them.
pub struct LocalStore {
    root: PathBuf,
}

const READ_BUF: usize = 256 * 1024;
const MANIFEST: &str = "manifest.json";

#[derive(Serialize, Deserialize)]
struct Manifest {
    /// `(file name, length)` in object order.
    parts: Vec<(String, u64)>,
}

impl LocalStore {
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root.join(".multipart"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Keys are server-made, but a key must still never leave the root.
    fn object_path(&self, key: &str) -> io::Result<PathBuf> {
        let rel = Path::new(key);
        let safe = !key.is_empty()
            && !key.starts_with('.')
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad object key {key:?}"),
            ));
        }
        Ok(self.root.join(rel))
    }

    fn multipart_dir(&self, id: &str) -> io::Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad multipart id {id:?}"),
            ));
        }
        Ok(self.root.join(".multipart").join(id))
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn create_multipart(&self, _key: &str) -> io::Result<String> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = self.multipart_dir(&id)?;
        tokio::fs::create_dir_all(&dir).await?;
        sync_dir(dir.parent().expect("has parent")).await?;
        Ok(id)
    }

    async fn upload_part(
        &self,
        _key: &str,
        multipart_id: &str,
        part: u32,
        path: &Path,
    ) -> io::Result<String> {
        let dir = self.multipart_dir(multipart_id)?;
        if !tokio::fs::try_exists(&dir).await? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such multipart upload",
            ));
        }
        let dest = dir.join(format!("{part:05}"));
        // The staged file is already fsynced: a hard link makes it the part without copying.
        let _ = tokio::fs::remove_file(&dest).await;
        if tokio::fs::hard_link(path, &dest).await.is_err() {
            let tmp = dir.join(format!("{part:05}.tmp"));
            tokio::fs::copy(path, &tmp).await?;
            tokio::fs::File::open(&tmp).await?.sync_all().await?;
            tokio::fs::rename(&tmp, &dest).await?;
        }
        sync_dir(&dir).await?;
        let meta = tokio::fs::metadata(&dest).await?;
        Ok(format!("\"{multipart_id}-{part}-{}\"", meta.len()))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        multipart_id: &str,
        parts: &[(u32, String)],
    ) -> io::Result<()> {
        let dir = self.multipart_dir(multipart_id)?;
        let dest = self.object_path(key)?;
        if !tokio::fs::try_exists(&dir).await? {
            // Completed before (the node died before recording it): the object is there.
            return match tokio::fs::try_exists(dest.join(MANIFEST)).await? {
                true => Ok(()),
                false => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no such multipart upload",
                )),
            };
        }
        let mut manifest = Manifest { parts: Vec::new() };
        for (part, _) in parts {
            let name = format!("{part:05}");
            let len = tokio::fs::metadata(dir.join(&name)).await?.len();
            manifest.parts.push((name, len));
        }
        let bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
        let mut f = tokio::fs::File::create(dir.join(MANIFEST)).await?;
        f.write_all(&bytes).await?;
        // A tokio File reports a failed background write only to a later write or flush, not
        // to sync_all: without this flush a short manifest could be completed and answered 200.
        f.flush().await?;
        f.sync_all().await?;
        sync_dir(&dir).await?;
        // The parts become the object where they lie: completing costs no copy of the data.
        let parent = dest.parent().expect("keys have a parent");
        tokio::fs::create_dir_all(parent).await?;
        tokio::fs::rename(&dir, &dest).await?;
        sync_dir(parent).await?;
        sync_dir(dir.parent().expect("has parent")).await?;
        Ok(())
    }

    async fn abort_multipart(&self, _key: &str, multipart_id: &str) -> io::Result<()> {
        match tokio::fs::remove_dir_all(self.multipart_dir(multipart_id)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    async fn list_multipart(&self) -> io::Result<Vec<PendingMultipart>> {
        let mut found = Vec::new();
        let mut dir = tokio::fs::read_dir(self.root.join(".multipart")).await?;
        while let Some(e) = dir.next_entry().await? {
            let age = e
                .metadata()
                .await?
                .modified()?
                .elapsed()
                .unwrap_or_default();
            found.push(PendingMultipart {
                // The local store keys multipart uploads by id alone.
                key: String::new(),
                id: e.file_name().to_string_lossy().into_owned(),
                age,
            });
        }
        Ok(found)
    }

    async fn get(&self, key: &str, offset: u64, len: u64) -> io::Result<ByteStream> {
        let dir = self.object_path(key)?;
        let manifest: Manifest =
            serde_json::from_slice(&tokio::fs::read(dir.join(MANIFEST)).await?)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // The (part, offset in part, length) pieces that cover [offset, offset + len).
        let mut pieces = Vec::new();
        let (mut start, end) = (0u64, offset.saturating_add(len));
        for (name, part_len) in manifest.parts {
            let (lo, hi) = (offset.max(start), end.min(start + part_len));
            if lo < hi {
                pieces.push((dir.join(name), lo - start, hi - lo));
            }
            start += part_len;
        }
        let stream = futures::stream::iter(pieces)
            .then(|(path, from, n)| async move {
                let mut f = tokio::fs::File::open(&path).await?;
                f.seek(io::SeekFrom::Start(from)).await?;
                Ok::<_, io::Error>(tokio_util::io::ReaderStream::with_capacity(
                    f.take(n),
                    READ_BUF,
                ))
            })
            .try_flatten();
        Ok(Box::pin(stream))
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_dir_all(self.object_path(key)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (src, dst) = (self.object_path(from)?, self.object_path(to)?);
        if !tokio::fs::try_exists(&src).await? && tokio::fs::try_exists(&dst).await? {
            return Ok(());
        }
        let parent = dst.parent().expect("keys have a parent");
        tokio::fs::create_dir_all(parent).await?;
        tokio::fs::rename(&src, &dst).await?;
        sync_dir(parent).await
    }

    async fn put_object(&self, key: &str, path: &Path) -> io::Result<String> {
        let mp = self.create_multipart(key).await?;
        let etag = self.upload_part(key, &mp, 1, path).await?;
        self.complete_multipart(key, &mp, &[(1, etag.clone())])
            .await?;
        Ok(etag)
    }

    async fn presign_get(
        &self,
        _key: &str,
        _ttl: std::time::Duration,
        _content_disposition: &str,
    ) -> io::Result<Option<String>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn multipart_assembles_parts_in_order_and_completion_is_repeatable() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("objects")).unwrap();
        let mp = store.create_multipart("uploads/x").await.unwrap();
        let mut parts = Vec::new();
        for (i, data) in [&b"hello "[..], b"wide ", b"world"].iter().enumerate() {
            let p = dir.path().join(format!("staged{i}"));
            std::fs::write(&p, data).unwrap();
            let n = i as u32 + 1;
            parts.push((n, store.upload_part("uploads/x", &mp, n, &p).await.unwrap()));
        }
        store
            .complete_multipart("uploads/x", &mp, &parts)
            .await
            .unwrap();
        store
            .complete_multipart("uploads/x", &mp, &parts)
            .await
            .unwrap();
        let got: Vec<Bytes> = store
            .get("uploads/x", 6, 4)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), b"wide");
        for (offset, len, want) in [(0, 16, &b"hello wide world"[..]), (4, 9, b"o wide wo")] {
            let got: Vec<Bytes> = store
                .get("uploads/x", offset, len)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(got.concat(), want);
        }
        store.delete("uploads/x").await.unwrap();
        store.delete("uploads/x").await.unwrap();
        assert!(store.get("uploads/x", 0, 1).await.is_err());
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        assert!(store.object_path("../../etc/passwd").is_err());
        assert!(store.object_path("/etc/passwd").is_err());
        assert!(store.object_path(".multipart/x").is_err());
        assert!(store.multipart_dir("../x").is_err());
        assert!(store.object_path("uploads/abc").is_ok());
    }
}
