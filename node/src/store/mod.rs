//! Object stores: where finished files live. The trait follows S3's multipart model (create,
//! upload parts, complete or abort) so that every node can add parts to one object.
//!
//! Two stores implement it: [`local::LocalStore`] (a directory) and [`s3::S3Store`] (a bucket).

pub mod local;
pub mod s3;

use std::io;
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Starts a multipart upload for `key` and returns its id.
    async fn create_multipart(&self, key: &str) -> io::Result<String>;
    /// Stores the file at `path` as part `part` (1-based) and returns its ETag.
    async fn upload_part(
        &self,
        key: &str,
        multipart_id: &str,
        part: u32,
        path: &Path,
    ) -> io::Result<String>;
    /// Makes the object from the parts, in order. Repeating a completion that succeeded is Ok.
    async fn complete_multipart(
        &self,
        key: &str,
        multipart_id: &str,
        parts: &[(u32, String)],
    ) -> io::Result<()>;
    /// Drops a multipart upload and its parts; unknown ids are Ok.
    async fn abort_multipart(&self, key: &str, multipart_id: &str) -> io::Result<()>;
    /// Streams `len` bytes of the object from `offset`.
    async fn get(&self, key: &str, offset: u64, len: u64) -> io::Result<ByteStream>;
    /// Deletes the object; a missing object is Ok.
    /// Deletes an object; a key ending in `/` deletes every object under it.
    async fn delete(&self, key: &str) -> io::Result<()>;
    /// Moves an object to another key (quarantine). Moving a missing object that is already at
    /// `to` is Ok.
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Stores the file at `path` as the whole object (a one-chunk file) and returns its ETag.
    async fn put_object(&self, key: &str, path: &Path) -> io::Result<String>;
    /// The multipart uploads the store holds (to find those nothing recorded: a node killed
    /// between creating one and recording its id).
    async fn list_multipart(&self) -> io::Result<Vec<PendingMultipart>>;
    /// The least length of a part but the last (S3: 5 MiB); 0 when any length will do.
    fn min_part_size(&self) -> u64 {
        0
    }
    /// A URL that downloads the object without other credentials until `ttl` passes, if the
    /// store can make one.
    async fn presign_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
        content_disposition: &str,
    ) -> io::Result<Option<String>>;
}

/// A multipart upload in the store, as `list_multipart` finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMultipart {
    pub key: String,
    pub id: String,
    /// How long ago it was created.
    pub age: std::time::Duration,
}

pub(crate) async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}
