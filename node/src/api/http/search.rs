//! `GET /v1/search?q=&mime=&limit=&cursor=`: the caller's files, and those shared with them,
//! whose name has, for each word of `q`, a word that begins with it (case-insensitive,
//! Unicode-normalised), read from the owners' name indexes (`wharf_raft::model::search`), never
//! from a scan of every file. In creation order; `mime` keeps the files whose type starts with
//! it (`image/`), `folder` those directly in that folder (`root`: the caller's root).

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use wharf_proto::FileList;
use wharf_raft::model::search;

use crate::api::http::files::file_record;
use crate::api::http::{AppState, Caller};
use crate::error::{Error, Result};

/// Index entries one search reads at most per owner (for the query's most selective word).
const MAX_CANDIDATES: usize = 10_000;
/// Other owners whose shares a search looks through at most.
const MAX_SHARING_OWNERS: usize = 100;

#[derive(Deserialize)]
pub(super) struct SearchQuery {
    q: Option<String>,
    mime: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    folder: Option<String>,
}

pub(super) async fn search(
    State(s): State<AppState>,
    Caller(c): Caller,
    Query(q): Query<SearchQuery>,
) -> Result<Json<FileList>> {
    // Only the files directly in that folder (`root`: the root).
    let folder = q
        .folder
        .as_deref()
        .map(|f| super::folders::parse_folder(Some(f)))
        .transpose()?;
    let words = search::words(q.q.as_deref().unwrap_or_default());
    // The longest word finds the fewest names.
    let Some(key) = words.iter().max_by_key(|w| w.chars().count()).cloned() else {
        return Err(Error::bad_request(
            "invalid_request",
            "q needs at least one letter or digit",
        ));
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let applied = s.meta.linearizable().await?;
    // The folder's owner: the caller, or a user who shared it (or a folder above it).
    let folder_owner = match &folder {
        Some(Some(f)) => super::shares::folder_for(&applied, &c.sub, f)?.0,
        _ => c.sub.clone(),
    };
    let mut ids: Vec<(String, String)> = applied
        .files_by_word(&c.sub, &key, MAX_CANDIDATES)
        .into_iter()
        .map(|id| (id, c.sub.clone()))
        .collect();
    let sharing: std::collections::BTreeSet<String> = applied
        .shared_with(&c.sub, None, usize::MAX)
        .into_iter()
        .map(|s| s.owner)
        .take(MAX_SHARING_OWNERS)
        .collect();
    for owner in sharing {
        for id in applied.files_by_word(&owner, &key, MAX_CANDIDATES) {
            if applied.file_role(&owner, &id, &c.sub).is_some() {
                ids.push((id, owner.clone()));
            }
        }
    }
    // File ids are time-ordered: creation order.
    ids.sort();
    let after = q.cursor.unwrap_or_default();
    let mut files = Vec::new();
    let mut next_cursor = None;
    for (id, owner) in ids.iter().filter(|(id, _)| *id > after) {
        // The word index still holds what lies under a trashed folder.
        let Some(f) = applied.live_file(owner, id) else {
            continue;
        };
        let mime_ok = q
            .mime
            .as_deref()
            .is_none_or(|m| f.mime.as_deref().is_some_and(|fm| fm.starts_with(m)));
        let folder_ok = folder
            .as_ref()
            .is_none_or(|want| *owner == folder_owner && applied.file_folder(owner, id) == *want);
        if !mime_ok || !folder_ok || !search::matches(&f.name, &words) {
            continue;
        }
        if files.len() == limit {
            next_cursor = files.last().map(|r: &wharf_proto::FileRecord| r.id.clone());
            break;
        }
        files.push(file_record(&applied, &f));
    }
    Ok(Json(FileList { files, next_cursor }))
}
