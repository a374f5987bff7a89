//! Admin routes: queue rescans (`/v1/admin/rescan`) here, usage in [`usage`], webhooks in
//! [`webhooks`], the audit log in [`audit`], backups in [`backup`]. The cluster's routes are
//! in [`super::cluster`].

pub(super) mod audit;
pub(super) mod backup;
pub(super) mod usage;
pub(super) mod webhooks;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use wharf_raft::model::Command;
use wharf_raft::Outcome;

use crate::api::http::{parse_id, require_admin, ApiJson, AppState, Caller};
use crate::error::{Error, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RescanRequest {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    file: Option<String>,
}

/// Queues blobs for another scan (new signatures): one file, or all clean/error/unscanned.
pub(super) async fn rescan(
    State(s): State<AppState>,
    Caller(c): Caller,
    ApiJson(req): ApiJson<RescanRequest>,
) -> Result<Json<serde_json::Value>> {
    require_admin(&c)?;
    let file = match (req.all, req.file) {
        (true, None) => None,
        (false, Some(f)) => Some(parse_id(&f)?),
        _ => {
            return Err(Error::bad_request(
                "invalid_request",
                "give either \"all\": true or \"file\": ID",
            ))
        }
    };
    // One command re-queues a bounded number of blobs; a full batch means there may be more.
    let mut total = 0;
    loop {
        match s
            .quota
            .propose(Command::Rescan { file: file.clone() })
            .await?
        {
            Outcome::Requeued(n) => {
                total += n;
                if file.is_some() || n < wharf_raft::model::RESCAN_PER_COMMAND as u64 {
                    return Ok(Json(serde_json::json!({ "requeued": total })));
                }
            }
            other => return Err(Error::Internal(format!("unexpected {other:?}"))),
        }
    }
}
