//! tus concatenation (and concatenation-unfinished): `Upload-Concat: partial` makes a partial
//! upload, `Upload-Concat: final;URL …` a final one made of them, in order, even while they are
//! still uploading. The partials' chunks become the parts of the final's one object where the
//! nodes staged them (see `wharf_raft::model::concat`): no byte is copied to stitch the file.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use wharf_proto::CreateUpload;
use wharf_raft::model::concat::{Concat, MAX_PARTIALS};
use wharf_raft::model::{Chunk, UploadState};

pub(super) use crate::actors::quota::TusFinal;

use super::{expires, header_value, tus_response, UPLOAD_CONCAT, UPLOAD_EXPIRES};
use crate::api::http::uploads::validate_create;
use crate::api::http::{parse_id, AppState};
use crate::auth::Claims;
use crate::error::{Error, Result};

/// `Upload-Concat` on a creation.
pub(super) enum ConcatRequest {
    Partial,
    /// The partial uploads' ids in order, and the header as sent (HEAD echoes it).
    Final {
        partials: Vec<String>,
        raw: String,
    },
}

fn invalid(message: impl Into<String>) -> Error {
    Error::bad_request("invalid_concat", message)
}

/// Parses `Upload-Concat`: `partial`, or `final;` and the partial uploads' URLs (absolute or
/// relative, space-separated), each of which must name an upload of this server.
pub(super) fn parse(h: &HeaderMap) -> Result<Option<ConcatRequest>> {
    let Some(v) = h.get(&UPLOAD_CONCAT) else {
        return Ok(None);
    };
    let raw = v
        .to_str()
        .map_err(|_| invalid("Upload-Concat must be ASCII"))?
        .trim();
    if raw == "partial" {
        return Ok(Some(ConcatRequest::Partial));
    }
    let Some(urls) = raw.strip_prefix("final;") else {
        return Err(invalid(
            "Upload-Concat is `partial` or `final;` followed by the partial uploads' URLs",
        ));
    };
    let partials = urls
        .split_ascii_whitespace()
        .map(upload_id_of)
        .collect::<Result<Vec<_>>>()?;
    if partials.is_empty() || partials.len() > MAX_PARTIALS {
        return Err(invalid(format!(
            "a final upload names 1 to {MAX_PARTIALS} partial uploads"
        )));
    }
    Ok(Some(ConcatRequest::Final {
        partials,
        raw: raw.to_string(),
    }))
}

/// The upload id in a partial upload's URL (`/files/{id}`, `https://host/files/{id}`).
fn upload_id_of(url: &str) -> Result<String> {
    let path = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("", |j| &url[i + 3 + j..]),
        None => url,
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let id = path
        .strip_prefix("/files/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| invalid(format!("{url:?} is not an upload URL of this server")))?;
    parse_id(id).map_err(|_| invalid(format!("{url:?} names no upload of this server")))
}

/// `POST /files/` with `Upload-Concat: final;…`: a final upload of the caller's partial
/// uploads. It has no `Upload-Length` (its length is theirs, summed) and no body; when its
/// partials are already whole, it is completed at once, in the background.
pub(super) async fn create_final(
    s: &AppState,
    c: &Claims,
    headers: &HeaderMap,
    f: TusFinal,
) -> Result<Response> {
    if headers.contains_key(&super::UPLOAD_LENGTH)
        || headers.contains_key(&super::UPLOAD_DEFER_LENGTH)
    {
        return Err(Error::bad_request(
            "invalid_header",
            "a final upload's length is its partial uploads' lengths summed: send no Upload-Length",
        ));
    }
    if super::is_offset_stream(headers) {
        return Err(invalid(
            "a final upload takes no bytes of its own: send them to its partial uploads",
        ));
    }
    validate_create(&CreateUpload {
        name: f.name.clone(),
        size: 0,
        blake3: None,
        mime: f.mime.clone(),
        idempotency_key: None,
        folder: None,
        on_conflict: None,
    })?;
    s.rate
        .user_create(&c.sub, c.tier)
        .map_err(Error::RateLimited)?;
    check_part_sizes(s, &c.sub, &f.partials).await?;
    let up = s.quota.create_tus_final(c.sub.clone(), c.tier, f).await?;
    complete_when_whole(s, &c.sub, &up.id).await;
    let mut h = HeaderMap::new();
    h.insert(header::LOCATION, header_value(format!("/files/{}", up.id)));
    h.insert(UPLOAD_EXPIRES, expires(up.expires_at));
    Ok(tus_response(StatusCode::CREATED, h))
}

/// An object store with a least part size (S3: 5 MiB) takes a short part only at the end: every
/// partial but the last with bytes must end in a chunk at least that long. (A partial's chunk
/// size is chosen so that it does whenever the partial itself is that long.)
async fn check_part_sizes(s: &AppState, owner: &str, partials: &[String]) -> Result<()> {
    let min = s.store.min_part_size();
    if min == 0 {
        return Ok(());
    }
    let applied = s.meta.linearizable().await?;
    let sizes: Vec<(String, u64)> = partials
        .iter()
        .filter_map(|id| applied.upload_record(owner, id))
        .filter(|p| p.size > 0)
        .map(|p| (p.id.clone(), p.chunk_len(p.chunk_count() - 1)))
        .collect();
    let Some((_, but_last)) = sizes.split_last() else {
        return Ok(());
    };
    if let Some((id, len)) = but_last.iter().find(|(_, len)| *len < min) {
        return Err(Error::bad_request(
            "concat_part_too_small",
            format!(
                "partial upload {id} ends in {len} bytes: the object store joins parts of at \
                 least {min} bytes but the last, so every partial upload but the last must be \
                 at least that long"
            ),
        ));
    }
    Ok(())
}

/// Starts the completion of `final_id` in the background if every byte of its partials has
/// arrived (it then waits for the offloads still under way).
pub(super) async fn complete_when_whole(s: &AppState, owner: &str, final_id: &str) {
    let Ok(applied) = s.meta.linearizable().await else {
        return;
    };
    let whole = match applied.concat(owner, final_id) {
        Some(Concat::Final { partials, .. }) => partials.iter().all(|id| {
            applied.upload(owner, id).is_some_and(|p| {
                p.state == UploadState::Uploading
                    && p.chunks.iter().all(|c| !matches!(c, Chunk::Missing))
            })
        }),
        _ => false,
    };
    drop(applied);
    if whole {
        let (uploads, owner, id) = (s.uploads.clone(), owner.to_string(), final_id.to_string());
        tokio::spawn(async move {
            if let Err(e) = uploads.complete(owner, id).await {
                tracing::debug!(error = %e, "completing a final tus upload");
            }
        });
    }
}

/// A partial upload's last byte arrived: if a final upload named it already, the final may be
/// whole now.
pub(super) async fn partial_whole(s: &AppState, owner: &str, partial: &str) {
    let claimed = s
        .meta
        .linearizable()
        .await
        .ok()
        .and_then(|a| match a.concat(owner, partial) {
            Some(Concat::Partial { into: Some(c) }) => Some(c.final_id),
            _ => None,
        });
    if let Some(final_id) = claimed {
        complete_when_whole(s, owner, &final_id).await;
    }
}

/// What HEAD adds for a partial or final upload: `Upload-Concat` as it was sent; a final's
/// `Upload-Offset` only once it is complete (the protocol leaves it undefined before).
pub(super) fn head_headers(concat: &Concat, state: UploadState, size: u64, h: &mut HeaderMap) {
    match concat {
        Concat::Partial { .. } => {
            h.insert(UPLOAD_CONCAT, HeaderValue::from_static("partial"));
        }
        Concat::Final { header, .. } => {
            h.insert(UPLOAD_CONCAT, header_value(header));
            if state == UploadState::Stored {
                h.insert(super::UPLOAD_OFFSET, header_value(size));
            } else {
                h.remove(super::UPLOAD_OFFSET);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_url_names_an_upload_of_this_server_however_it_is_written() {
        let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        for url in [
            format!("/files/{id}"),
            format!("http://127.0.0.1:8080/files/{id}"),
            format!("https://wharf.example/files/{id}?x=1"),
        ] {
            assert_eq!(upload_id_of(&url).unwrap(), id, "{url}");
        }
        for bad in [
            "/files/",
            "/files/not-an-id",
            "/other/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "../../etc/passwd",
            "http://host",
        ] {
            assert!(upload_id_of(bad).is_err(), "{bad}");
        }
    }
}
