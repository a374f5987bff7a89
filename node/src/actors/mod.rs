//! The request half of the actor pattern: send a message carrying a oneshot reply sender to an
//! actor's bounded mailbox, await the reply.
//!
//! The actors: [`quota`] (reservations and usage), [`uploads`] (upload sessions: staging,
//! offload, completion, sweeps) and [`scanner`] (virus scans through clamd). Each is a handle
//! that sends to its actor's mailbox; the HTTP and QUIC front ends call the handles.

pub mod quota;
pub mod scanner;
pub mod uploads;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Sends `msg(reply)` to the actor behind `tx` and waits for its answer.
pub async fn call<M, T>(
    tx: &mpsc::Sender<M>,
    msg: impl FnOnce(oneshot::Sender<Result<T>>) -> M,
) -> Result<T> {
    let gone = || Error::Unavailable("node is shutting down".into());
    let (reply, rx) = oneshot::channel();
    tx.send(msg(reply)).await.map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}
