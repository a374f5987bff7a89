//! At-most-once proposals: `Command::Once` remembers a compact answer under its request id.

use serde::{Deserialize, Serialize};

use super::state::keys;
use super::{
    apply, ApplyResult, Blob, Command, File, Millis, ModelError, Outcome, State, Upload, User,
};
use crate::kv::KvMut;

/// How long a request id is remembered: much longer than a proposal is ever retried (the
/// proposer gives up after 15 s).
pub const REQUEST_MEMORY_MS: Millis = 2 * 60 * 1000;

/// How many old request ids one apply forgets at most (amortised over later requests).
const FORGET_PER_APPLY: usize = 64;

/// What a retry needs to get its answer again: the outcome as it was, an upload without its
/// per-chunk list (a retry gets the upload as it is now when it still exists). A file is kept
/// whole: the command may have removed it (a delete), and its retry must still succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Answer {
    Done,
    Upload(Upload),
    File(File),
    User(User),
    MultipartId(String),
    Expired(Vec<String>),
    NodeId(u64),
    ChunksLost(u64),
    Blob(Blob),
    Requeued(u64),
    Batch(Vec<Result<Answer, ModelError>>),
    Pruned(u64),
    Link(super::links::Link),
    Folder(super::folders::Folder),
    Indexed(Option<String>),
    Trashed(super::trash::TrashEntry),
    Purged(bool),
    Share(super::shares::Share),
    Webhook(super::webhooks::Webhook),
}

#[derive(Serialize, Deserialize)]
struct Remembered {
    at: Millis,
    answer: Answer,
}

fn compact(o: &Outcome) -> Answer {
    match o {
        Outcome::Done => Answer::Done,
        Outcome::Upload(u) => Answer::Upload(Upload {
            chunks: Vec::new(),
            ..u.clone()
        }),
        Outcome::File(f) => Answer::File(f.clone()),
        Outcome::User(u) => Answer::User(u.clone()),
        Outcome::MultipartId(m) => Answer::MultipartId(m.clone()),
        Outcome::Expired(v) => Answer::Expired(v.clone()),
        Outcome::NodeId(n) => Answer::NodeId(*n),
        Outcome::ChunksLost(n) => Answer::ChunksLost(*n),
        Outcome::Blob(b) => Answer::Blob(b.clone()),
        Outcome::Requeued(n) => Answer::Requeued(*n),
        Outcome::Pruned(n) => Answer::Pruned(*n),
        Outcome::Link(l) => Answer::Link(l.clone()),
        Outcome::Folder(f) => Answer::Folder(f.clone()),
        Outcome::Indexed(a) => Answer::Indexed(a.clone()),
        Outcome::Trashed(e) => Answer::Trashed(e.clone()),
        Outcome::Purged(d) => Answer::Purged(*d),
        Outcome::Share(s) => Answer::Share(s.clone()),
        Outcome::Webhook(w) => Answer::Webhook(w.clone()),
        Outcome::Batch(v) => Answer::Batch(
            v.iter()
                .map(|r| r.as_ref().map(compact).map_err(Clone::clone))
                .collect(),
        ),
    }
}

fn expand<K: KvMut>(state: &State<K>, a: Answer) -> ApplyResult {
    Ok(match a {
        Answer::Done => Outcome::Done,
        Answer::Upload(u) => Outcome::Upload(state.upload(&u.owner, &u.id).unwrap_or(u)),
        Answer::File(f) => Outcome::File(f),
        Answer::User(u) => Outcome::User(u),
        Answer::MultipartId(m) => Outcome::MultipartId(m),
        Answer::Expired(v) => Outcome::Expired(v),
        Answer::NodeId(n) => Outcome::NodeId(n),
        Answer::ChunksLost(n) => Outcome::ChunksLost(n),
        Answer::Blob(b) => Outcome::Blob(b),
        Answer::Requeued(n) => Outcome::Requeued(n),
        Answer::Pruned(n) => Outcome::Pruned(n),
        Answer::Link(l) => Outcome::Link(l),
        Answer::Folder(f) => Outcome::Folder(f),
        Answer::Indexed(a) => Outcome::Indexed(a),
        Answer::Trashed(e) => Outcome::Trashed(e),
        Answer::Purged(d) => Outcome::Purged(d),
        Answer::Share(s) => Outcome::Share(s),
        Answer::Webhook(w) => Outcome::Webhook(w),
        Answer::Batch(v) => Outcome::Batch(
            v.into_iter()
                .map(|r| r.and_then(|a| expand(state, a)))
                .collect(),
        ),
    })
}

pub(super) fn once<K: KvMut>(
    state: &mut State<K>,
    id: String,
    at: Millis,
    cmd: Command,
) -> ApplyResult {
    if let Some(r) = state.read_at::<Remembered>(&keys::request(&id)) {
        return expand(state, r.answer);
    }
    // A refused command changed nothing, so applying it again is harmless: only successes
    // are remembered.
    let outcome = apply(state, cmd)?;
    forget_old(state, at);
    state.write_at(&keys::request_time(at, &id), &());
    state.write_at(
        &keys::request(&id),
        &Remembered {
            at,
            answer: compact(&outcome),
        },
    );
    Ok(outcome)
}

/// Forgets request ids older than the memory, oldest first, a bounded number at a time.
fn forget_old<K: KvMut>(state: &mut State<K>, now: Millis) {
    let cutoff = now.saturating_sub(REQUEST_MEMORY_MS);
    let last = format!("rt/{cutoff:020}/").into_bytes();
    // Only the keys below the cutoff are read: usually none, so an apply reads one key here.
    for k in state.keys_under_before(keys::REQUEST_TIMES, &last, FORGET_PER_APPLY) {
        let id = String::from_utf8_lossy(&k[b"rt/".len() + 21..]).into_owned();
        state.delete_at(&k);
        state.delete_at(&keys::request(&id));
    }
}
