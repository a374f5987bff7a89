//! The S3 object store (aws-sdk-s3), for AWS S3 and S3-compatible servers.
//!
//! Parts are sent with `Content-MD5` (computed from the staged file), so S3 checks every part's
//! bytes; the SDK's own flexible checksums are turned off because servers disagree about them.
//! A one-chunk file is one `PutObject`. Nothing here relies on `ListMultipartUploads`.
//! Quarantine moves an object by copying it (`CopyObject`, or `UploadPartCopy` ranges above
//! 5 GiB) and deleting the original.

use std::io;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use base64::Engine;
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;

use crate::config::StoreConfig;
use crate::store::{ByteStream as Bytes, ObjectStore, PendingMultipart};

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

fn s3_err<E: std::error::Error + Send + Sync + 'static>(what: &str, e: E) -> io::Error {
    io::Error::other(format!("S3 {what}: {}", DisplayErrorContext(e)))
}

impl S3Store {
    /// Builds the client (credentials from the standard AWS chain) and checks the bucket.
    pub async fn connect(cfg: &StoreConfig) -> anyhow::Result<Self> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if !cfg.region.is_empty() {
            loader = loader.region(Region::new(cfg.region.clone()));
        }
        let shared = loader.load().await;
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(cfg.request_timeout_secs))
            .build();
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .timeout_config(timeouts)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if !cfg.endpoint.is_empty() {
            b = b.endpoint_url(&cfg.endpoint);
        }
        let client = Client::from_conf(b.build());
        let endpoint = if cfg.endpoint.is_empty() {
            "AWS"
        } else {
            cfg.endpoint.as_str()
        };
        client
            .head_bucket()
            .bucket(&cfg.bucket)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(e)))
            .with_context(|| {
                format!(
                    "cannot use S3 bucket {:?} at {endpoint} (check store.endpoint, store.bucket, \
                     store.region and the AWS credentials)",
                    cfg.bucket
                )
            })?;
        Ok(Self {
            client,
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn delete_raw(&self, full_key: String) -> io::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
            .map_err(|e| s3_err("DeleteObject", e))?;
        Ok(())
    }

    /// Every object under `prefix` (a key ending in `/`, as the local store's directories).
    async fn delete_under(&self, prefix: &str) -> io::Result<()> {
        let mut token = None::<String>;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.key(prefix))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_err("ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    self.delete_raw(k.to_string()).await?;
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(()),
            }
        }
    }
}

/// A staged file as a request body: its base64 MD5 (for `Content-MD5`), length, and stream.
async fn staged_body(path: &Path) -> io::Result<(String, u64, ByteStream)> {
    let (md5, len) = content_md5(path).await?;
    let body = ByteStream::from_path(path)
        .await
        .map_err(|e| s3_err("reading a staged chunk", e))?;
    Ok((md5, len, body))
}

/// Base64 MD5 of a file, read in 1 MiB pieces.
async fn content_md5(path: &Path) -> io::Result<(String, u64)> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut md5 = Md5::new();
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        len += n as u64;
    }
    Ok((
        base64::engine::general_purpose::STANDARD.encode(md5.finalize()),
        len,
    ))
}

#[async_trait]
impl ObjectStore for S3Store {
    fn min_part_size(&self) -> u64 {
        wharf_raft::model::concat::MIN_PART
    }

    async fn create_multipart(&self, key: &str) -> io::Result<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|e| s3_err("CreateMultipartUpload", e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other("S3 returned no upload id"))
    }

    async fn upload_part(
        &self,
        key: &str,
        multipart_id: &str,
        part: u32,
        path: &Path,
    ) -> io::Result<String> {
        let (md5, len, body) = staged_body(path).await?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.key(key))
            .upload_id(multipart_id)
            .part_number(part as i32)
            .content_length(len as i64)
            .content_md5(md5)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_err("UploadPart", e))?;
        out.e_tag()
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other("S3 returned no ETag"))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        multipart_id: &str,
        parts: &[(u32, String)],
    ) -> io::Result<()> {
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|(n, etag)| {
                        CompletedPart::builder()
                            .part_number(*n as i32)
                            .e_tag(etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let res = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.key(key))
            .upload_id(multipart_id)
            .multipart_upload(upload)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            // Completed before (the node died before recording it): the object is there.
            Err(e) if e.code() == Some("NoSuchUpload") && self.exists(key).await? => Ok(()),
            // A 200 whose body the SDK cannot read (moto names the root element
            // CompleteMultipartUploadResponse): believe it only if the object is there.
            Err(SdkError::ServiceError(se))
                if se.err().code().is_none()
                    && se.raw().status().is_success()
                    && self.exists(key).await? =>
            {
                Ok(())
            }
            Err(e) => Err(s3_err("CompleteMultipartUpload", e)),
        }
    }

    async fn list_multipart(&self) -> io::Result<Vec<PendingMultipart>> {
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.key("uploads/"))
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| s3_err("ListMultipartUploads", e))?;
            for u in page.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let age = u
                    .initiated()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                found.push(PendingMultipart {
                    key: key.strip_prefix(&self.prefix).unwrap_or(key).to_string(),
                    id: id.to_string(),
                    age,
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(found);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(found);
            }
        }
    }

    async fn abort_multipart(&self, key: &str, multipart_id: &str) -> io::Result<()> {
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.key(key))
            .upload_id(multipart_id)
            .send()
            .await;
        match res {
            Err(e) if e.code() != Some("NoSuchUpload") => Err(s3_err("AbortMultipartUpload", e)),
            _ => Ok(()),
        }
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.move_object(from, to, COPY_OBJECT_MAX, COPY_PART).await
    }

    async fn put_object(&self, key: &str, path: &Path) -> io::Result<String> {
        let (md5, len, body) = staged_body(path).await?;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .content_length(len as i64)
            .content_md5(md5)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_err("PutObject", e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn get(&self, key: &str, offset: u64, len: u64) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .range(format!("bytes={}-{}", offset, offset + len - 1))
            .send()
            .await
            .map_err(|e| s3_err("GetObject", e))?;
        let reader = out.body.into_async_read();
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            reader,
            256 * 1024,
        )))
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        if key.ends_with('/') {
            return self.delete_under(key).await;
        }
        self.delete_raw(self.key(key)).await
    }

    async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
        filename: &str,
    ) -> io::Result<Option<String>> {
        let config = PresigningConfig::expires_in(ttl).map_err(io::Error::other)?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .response_content_disposition(filename)
            .presigned(config)
            .await
            .map_err(|e| s3_err("presigning GetObject", e))?;
        Ok(Some(req.uri().to_string()))
    }
}

/// The largest object one `CopyObject` copies (S3's limit).
pub const COPY_OBJECT_MAX: u64 = 5 << 30;
/// The part size of a multipart copy (S3 takes 5 MiB to 5 GiB, at most 10,000 parts).
pub const COPY_PART: u64 = 1 << 30;
const MAX_PARTS: u64 = 10_000;

impl S3Store {
    /// Moves an object to `to`: copies it (see [`Self::copy_object`]), then deletes `from`, so
    /// that a URL presigned for `from` stops working. Moving an object already moved is Ok.
    pub async fn move_object(
        &self,
        from: &str,
        to: &str,
        single_max: u64,
        part_size: u64,
    ) -> io::Result<()> {
        let Some(size) = self.size_of(from).await? else {
            // Moved before (and the move not recorded): the object is at `to`.
            if self.exists(to).await? {
                return Ok(());
            }
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("S3 object {from:?} to move is missing"),
            ));
        };
        self.copy_object(from, to, size, single_max, part_size)
            .await?;
        self.delete(from).await?;
        if self.exists(from).await? {
            return Err(io::Error::other(format!(
                "S3 object {from:?} is still there after its deletion"
            )));
        }
        Ok(())
    }

    /// Copies the `size`-byte object `from` to `to` inside the bucket: one `CopyObject` up to
    /// `single_max` bytes, else a multipart upload of `UploadPartCopy` byte ranges of
    /// `part_size` (raised if the object would need more than 10,000 parts). `CopyObject`
    /// refuses objects over 5 GiB ([`COPY_OBJECT_MAX`]).
    pub async fn copy_object(
        &self,
        from: &str,
        to: &str,
        size: u64,
        single_max: u64,
        part_size: u64,
    ) -> io::Result<()> {
        let source = format!("{}/{}", self.bucket, self.key(from));
        if size <= single_max {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(self.key(to))
                .copy_source(source)
                .send()
                .await
                .map_err(|e| s3_err("CopyObject", e))?;
            return Ok(());
        }
        let part_size = part_size.max(size.div_ceil(MAX_PARTS)).max(1);
        let id = self.create_multipart(to).await?;
        let copied = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            while start < size {
                let end = (start + part_size).min(size) - 1;
                let n = parts.len() as u32 + 1;
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(self.key(to))
                    .upload_id(&id)
                    .part_number(n as i32)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| s3_err("UploadPartCopy", e))?;
                let etag = out
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .ok_or_else(|| io::Error::other("S3 returned no ETag for a copied part"))?;
                parts.push((n, etag.to_string()));
                start = end + 1;
            }
            self.complete_multipart(to, &id, &parts).await
        }
        .await;
        if copied.is_err() {
            // Leave no half-made copy's parts behind. (Best effort: the orphan sweep looks under
            // uploads/ only, so parts an abort failed to drop wait for a bucket lifecycle rule.)
            let _ = self.abort_multipart(to, &id).await;
        }
        copied
    }

    /// The object's size, or None if there is no such object.
    async fn size_of(&self, key: &str) -> io::Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_err("HeadObject", e)),
        }
    }

    async fn exists(&self, key: &str) -> io::Result<bool> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(s3_err("HeadObject", e)),
        }
    }
}
