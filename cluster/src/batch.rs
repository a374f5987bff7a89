//! Group commit above Raft: the proposals that arrive while earlier ones are in flight share
//! one Raft entry ([`Command::Batch`]).
//!
//! openraft 0.9 takes client writes one at a time: each is its own entry, its own append and
//! its own pass through the leader's core task, which then has less time for the replication
//! answers that move the commit index. The proposer keeps at most [`IN_FLIGHT`] entries
//! proposed at once; whatever arrives meanwhile waits and goes in the next entry, so that the
//! number of entries follows Raft's pace, not the number of clients. A proposal that finds
//! nothing in flight is proposed at once, as itself.

// openraft's write error (a large type) is what a write answers, as `Raft::client_write` does.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use wharf_raft::{Command, ModelError, NodeId, Outcome, Raft, Request, WharfNode};

/// What a write came back with: the state machine's answer, or Raft's refusal (not the
/// leader, shutting down, ...) for the caller to handle as it would its own write's.
pub type Written =
    Result<Result<Outcome, ModelError>, RaftError<NodeId, ClientWriteError<NodeId, WharfNode>>>;

/// Entries proposed and not yet applied, at most.
const IN_FLIGHT: usize = 4;
/// Commands in one entry, at most (a command is well under 1 KiB: an entry stays small
/// enough to replicate in one message).
const MAX_BATCH: usize = 256;
/// Proposals waiting for a place in an entry, at most (then callers wait to hand theirs in).
const QUEUE: usize = 4096;

type Waiting = (Command, oneshot::Sender<Written>);

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Waiting>,
}

impl Proposer {
    /// Starts the proposer's task; it ends when the last handle is dropped.
    pub fn spawn(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Proposes `cmd` on this node's Raft (which refuses it when this node is not the leader)
    /// and waits for its answer.
    pub async fn write(&self, cmd: Command) -> Written {
        let (reply, answer) = oneshot::channel();
        if self.tx.send((cmd, reply)).await.is_err() {
            return no_leader();
        }
        answer.await.unwrap_or_else(|_| no_leader())
    }
}

/// The proposer has stopped (the node is shutting down): as a node that knows no leader.
fn no_leader() -> Written {
    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
        openraft::error::ForwardToLeader::empty(),
    )))
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Everything that came while the slot was awaited joins this entry.
        let mut group = vec![first];
        while group.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => group.push(w),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, group).await;
            drop(slot);
        });
    }
}

async fn propose(raft: &Raft, mut group: Vec<Waiting>) {
    if group.len() == 1 {
        let (cmd, reply) = group.pop().expect("one");
        let written = raft.client_write(Request(cmd)).await.map(|r| r.data.0);
        let _ = reply.send(written);
        return;
    }
    let (cmds, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
    let written = raft
        .client_write(Request(Command::Batch { cmds }))
        .await
        .map(|r| r.data.0);
    match written {
        Ok(Ok(Outcome::Batch(answers))) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        // A batch always applies; anything else is a refusal of the whole entry.
        Ok(other) => {
            let err = match other {
                Err(e) => e,
                Ok(o) => ModelError::Invalid(format!("a batch was answered {o:?}")),
            };
            for reply in replies {
                let _ = reply.send(Ok(Err(err.clone())));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
