//! `GET /v1/admin/backup`: a consistent backup of the metadata (see
//! `wharf_raft::store::backup`), for `wharf admin backup`; `wharf cluster restore` makes a new
//! cluster from it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use wharf_raft::store::backup::{self, BackupHeader};

use crate::api::http::{require_admin, AppState, Caller};
use crate::error::{Error, Result};
use crate::meta::now_ms;

pub(crate) async fn backup(State(s): State<AppState>, Caller(c): Caller) -> Result<Response> {
    require_admin(&c)?;
    let snap = s.meta.fresh_snapshot().await?;
    let header = BackupHeader {
        meta: snap.meta.clone(),
        created_at: now_ms(),
    };
    let index = header.meta.last_log_id.map_or(0, |l| l.index);
    // Written whole first (beside staging, whose sweep removes what a crash leaves), so the
    // checksum is known before the first byte goes out.
    let path = s
        .uploads
        .spool_dir()
        .join(format!("backup-{}", uuid::Uuid::now_v7()));
    let mut snapshot = snap.snapshot.into_std().await;
    let written = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            backup::write(out, &header, &mut snapshot)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    };
    let (hash, len) = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(Error::Internal(format!("writing the backup: {e}")));
        }
    };
    let file = tokio::fs::File::open(&path).await;
    // Open: the name can go now, the bytes stay until the answer is sent.
    let _ = std::fs::remove_file(&path);
    let file = file.map_err(|e| Error::Internal(format!("reading the backup: {e}")))?;
    let mut resp = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    let h = resp.headers_mut();
    let hv = |v: String| HeaderValue::from_str(&v).map_err(|e| Error::Internal(e.to_string()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, hv(len.to_string())?);
    h.insert("x-wharf-backup-index", hv(index.to_string())?);
    h.insert("x-wharf-backup-blake3", hv(hash)?);
    Ok(resp)
}
