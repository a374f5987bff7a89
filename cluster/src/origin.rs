//! Who a request came from, carried with the request's work so that the proposals it makes
//! say so (`Command::Via`, for the audit log).
//!
//! The front ends open a scope per request with the client's address ([`scope`]) and name
//! the caller once it is authenticated ([`set_actor`]); [`crate::meta::Metadata::propose`]
//! wraps an audited command in `Via` when it runs in such a scope. Actors that take messages
//! from a request and work on in tasks of their own carry the scope over: [`current`] where
//! the message is sent, [`sync_scope`] where it is handled, [`spawn`] for the tasks.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use wharf_raft::model::audit::Origin;

#[derive(Clone)]
struct RequestOrigin {
    addr: String,
    node: u64,
    actor: Arc<OnceLock<String>>,
}

tokio::task_local! {
    static ORIGIN: RequestOrigin;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `f` as the work of a request from `addr` taken by node `node`.
pub async fn scope<F: Future>(addr: String, node: u64, f: F) -> F::Output {
    let o = RequestOrigin {
        addr,
        node,
        actor: Arc::new(OnceLock::new()),
    };
    ORIGIN.scope(o, f).await
}

/// Names the authenticated caller of the request in scope (the first name stands).
pub fn set_actor(actor: &str) {
    let _ = ORIGIN.try_with(|o| o.actor.set(actor.to_string()));
}

/// The origin of the request in scope, now (its actor `anonymous` when none was named).
pub fn current() -> Option<Origin> {
    ORIGIN
        .try_with(|o| Origin {
            actor: o
                .actor
                .get()
                .cloned()
                .unwrap_or_else(|| "anonymous".to_string()),
            addr: o.addr.clone(),
            node: o.node,
            at: now_ms(),
        })
        .ok()
}

fn of(origin: Origin) -> RequestOrigin {
    RequestOrigin {
        addr: origin.addr,
        node: origin.node,
        actor: Arc::new(OnceLock::from(origin.actor)),
    }
}

/// Runs `f` in the scope of `origin` (as it was captured by [`current`]), if any.
pub fn sync_scope<R>(origin: Option<Origin>, f: impl FnOnce() -> R) -> R {
    match origin {
        Some(o) => ORIGIN.sync_scope(of(o), f),
        None => f(),
    }
}

/// `tokio::spawn`, with the origin in scope and the current span carried into the new task.
pub fn spawn<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let f = tracing::Instrument::in_current_span(f);
    match ORIGIN.try_with(|o| o.clone()) {
        Ok(o) => tokio::spawn(ORIGIN.scope(o, f)),
        Err(_) => tokio::spawn(f),
    }
}

/// `cmd`, wrapped in `Via` when it is audited and runs in a request's scope.
pub fn wrap(cmd: wharf_raft::model::Command) -> wharf_raft::model::Command {
    use wharf_raft::model::{audit, Command};
    match current() {
        Some(origin) if audit::audited(&cmd) && !matches!(cmd, Command::Via { .. }) => {
            Command::Via {
                origin,
                cmd: Box::new(cmd),
            }
        }
        _ => cmd,
    }
}

/// Runs `f` in the scope of `origin` (as it was captured by [`current`]), if any.
pub async fn within<F: Future>(origin: Option<Origin>, f: F) -> F::Output {
    match origin {
        Some(o) => ORIGIN.scope(of(o), f).await,
        None => f.await,
    }
}
