//! The cluster's admin routes (`/v1/cluster/…`): status, members, join tokens, and the
//! certificate requests of joining nodes waiting for a holder of the CA key.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use wharf_raft::model::Command;

use crate::api::http::{require_admin, ApiJson, AppState, Caller};
use crate::error::{Error, Result};

pub(super) async fn cluster_status(
    State(s): State<AppState>,
    Caller(c): Caller,
) -> Result<Json<wharf_cluster::ClusterStatus>> {
    require_admin(&c)?;
    Ok(Json(s.meta.cluster_status().await))
}

fn parse_node_id(id: &str) -> Result<u64> {
    id.parse().ok().filter(|n| *n > 0).ok_or(Error::NotFound)
}

pub(super) async fn promote_node(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    require_admin(&c)?;
    s.meta.promote(parse_node_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn remove_node(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    require_admin(&c)?;
    s.meta.remove(parse_node_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The longest a join token may live.
const TOKEN_MAX_TTL_SECS: u64 = 30 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    /// Joins it admits (default 1).
    #[serde(default)]
    uses: Option<u32>,
    /// Lifetime in seconds (default one day).
    #[serde(default)]
    ttl_secs: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct TokenView {
    id: String,
    uses_left: u32,
    expires_at: u64,
    created_at: u64,
    /// Only in the answer that made it: the token is shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl TokenView {
    fn of(t: wharf_raft::model::JoinToken, token: Option<String>) -> Self {
        Self {
            id: t.id,
            uses_left: t.uses_left,
            expires_at: t.expires_at,
            created_at: t.created_at,
            token,
        }
    }
}

pub(super) async fn create_token(
    State(s): State<AppState>,
    Caller(c): Caller,
    ApiJson(req): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<TokenView>)> {
    require_admin(&c)?;
    let uses = req.uses.unwrap_or(1);
    let ttl = req.ttl_secs.unwrap_or(24 * 3600);
    if uses == 0 || uses > 10_000 {
        return Err(Error::bad_request(
            "invalid_request",
            "uses must be between 1 and 10000",
        ));
    }
    if ttl == 0 || ttl > TOKEN_MAX_TTL_SECS {
        return Err(Error::bad_request(
            "invalid_request",
            "ttl_secs must be between 1 and 2592000 (30 days)",
        ));
    }
    let spec = crate::TokenSpec {
        uses,
        ttl: Duration::from_secs(ttl),
    };
    let (token, record) = crate::create_join_token(&s.meta, &s.ca_pem, spec).await?;
    tracing::info!(token_id = %record.id, uses, ttl_secs = ttl, "made a join token");
    Ok((
        StatusCode::CREATED,
        Json(TokenView::of(record, Some(token))),
    ))
}

pub(super) async fn list_tokens(
    State(s): State<AppState>,
    Caller(c): Caller,
) -> Result<Json<serde_json::Value>> {
    require_admin(&c)?;
    let now = crate::now_ms();
    let state = s.meta.linearizable().await?;
    let tokens: Vec<TokenView> = state
        .join_tokens()
        .into_iter()
        .filter(|t| t.expires_at > now)
        .map(|t| TokenView::of(t, None))
        .collect();
    Ok(Json(serde_json::json!({ "tokens": tokens })))
}

pub(super) async fn revoke_token(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    require_admin(&c)?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NotFound);
    }
    s.quota
        .propose(Command::RevokeJoinToken { id: id.clone() })
        .await?;
    tracing::info!(token_id = %id, "revoked a join token");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct RequestView {
    node_id: u64,
    peer_addr: String,
    http_addr: String,
    admitted_at: u64,
    csr_pem: String,
}

/// Admitted nodes waiting for a signed certificate.
pub(super) async fn list_requests(
    State(s): State<AppState>,
    Caller(c): Caller,
) -> Result<Json<serde_json::Value>> {
    require_admin(&c)?;
    let state = s.meta.linearizable().await?;
    let requests: Vec<RequestView> = state
        .nodes()
        .into_iter()
        .filter(|n| !n.removed && n.cert_pem.is_none())
        .filter_map(|n| {
            Some(RequestView {
                node_id: n.id,
                csr_pem: n.csr_pem?,
                peer_addr: n.peer_addr,
                http_addr: n.http_addr,
                admitted_at: n.admitted_at,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "requests": requests })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignedCert {
    cert_pem: String,
}

/// A certificate signed away from the cluster (`wharf cluster sign-csr`) for a waiting node.
pub(super) async fn put_certificate(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SignedCert>,
) -> Result<StatusCode> {
    require_admin(&c)?;
    let node = parse_node_id(&id)?;
    if wharf_cluster::tls::pem_node_id(&req.cert_pem) != Some(node)
        || !wharf_cluster::tls::issued_by(&req.cert_pem, &s.ca_pem)
    {
        return Err(Error::bad_request(
            "invalid_certificate",
            format!("not a certificate of node {node} signed by this cluster's CA"),
        ));
    }
    s.quota
        .propose(Command::NodeCertIssued {
            node,
            cert_pem: req.cert_pem,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
