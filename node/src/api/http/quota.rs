//! Quota routes: `GET /v1/usage` (the caller's usage and quota) and an admin's
//! `PUT /v1/admin/users/{user}/quota`.

use axum::extract::{Path, State};
use axum::Json;
use wharf_proto::{SetQuota, Usage};
use wharf_raft::model::{self, Command};
use wharf_raft::Outcome;

use crate::api::http::{require_admin, ApiJson, AppState, Caller};
use crate::auth;
use crate::error::{Error, Result};

fn usage_body(u: Option<&model::User>, user: &str, default_quota: u64) -> Usage {
    match u {
        Some(u) => Usage {
            user: u.id.clone(),
            used: u.used,
            reserved: u.reserved,
            quota: u.quota,
        },
        None => Usage {
            user: user.to_string(),
            used: 0,
            reserved: 0,
            quota: default_quota,
        },
    }
}

pub(super) async fn usage(State(s): State<AppState>, Caller(c): Caller) -> Result<Json<Usage>> {
    let default_quota = s.quota.limits(c.tier).quota;
    let applied = s.meta.linearizable().await?;
    let user = applied.user(&c.sub);
    let mut body = usage_body(user.as_ref(), &c.sub, default_quota);
    if let Some(u) = user {
        body.quota = u.quota_under(&s.quota.limits(c.tier));
    }
    Ok(Json(body))
}

pub(super) async fn set_quota(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(user): Path<String>,
    ApiJson(req): ApiJson<SetQuota>,
) -> Result<Json<Usage>> {
    require_admin(&c)?;
    auth::validate_user_id(&user)?;
    match s
        .quota
        .propose(Command::SetQuota {
            user: user.clone(),
            quota: req.quota,
        })
        .await?
    {
        Outcome::User(u) => Ok(Json(usage_body(Some(&u), &user, u.quota))),
        other => Err(Error::Internal(format!("unexpected {other:?}"))),
    }
}
