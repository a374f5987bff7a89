//! The request half of the actor pattern: send a message carrying a oneshot reply sender to an
//! actor's bounded mailbox, await the reply.
//!
//! The actors: [`quota`] (reservations and usage), [`uploads`] (upload sessions: staging,
//! offload, completion, sweeps) and [`scanner`] (virus scans through clamd). Each is a handle
//! that sends to its actor's mailbox; the HTTP and QUIC front ends call the handles.
//! [`webhooks`] is a task of its own that delivers events while its node leads; [`audit`]
//! batches download records into the log.

pub mod audit;
pub mod quota;
pub mod scanner;
pub mod uploads;
pub mod webhooks;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// A message, with the origin of the request it serves and that request's span (the trace
/// goes on in the actor's work).
pub type Envelope<M> = (Option<wharf_raft::model::audit::Origin>, tracing::Span, M);

/// Sends `msg(reply)` to the actor behind `tx` and waits for its answer.
/// The message goes with the origin of the request that sends it (see
/// [`wharf_cluster::origin`]): the proposals the actor makes for it say who asked.
pub async fn call<M, T>(
    tx: &mpsc::Sender<Envelope<M>>,
    msg: impl FnOnce(oneshot::Sender<Result<T>>) -> M,
) -> Result<T> {
    let gone = || Error::Unavailable("node is shutting down".into());
    let (reply, rx) = oneshot::channel();
    let origin = wharf_cluster::origin::current();
    let span = tracing::Span::current();
    tx.send((origin, span, msg(reply)))
        .await
        .map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}
