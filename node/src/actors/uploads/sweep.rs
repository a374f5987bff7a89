//! The sweeper: expiry of idle uploads, garbage collection and lost nodes (on the leader),
//! staging clean-up and recount (on every node).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wharf_raft::model::events::PRUNE_PER_COMMAND;
use wharf_raft::model::{Chunk, Command};
use wharf_raft::Outcome;

use crate::actors::uploads::gauge::{remove_upload_dir, staged_chunk_bytes};
use crate::actors::uploads::{Ctx, Done};
use crate::error::Error;
use crate::meta::now_ms;

/// How far the wall clock may drift from the monotonic clock before it counts as stepped.
const CLOCK_STEP_MS: u64 = 2_000;

/// The time the leader expires uploads by: never ahead of the wall clock, and never running
/// faster than the monotonic clock since this node began to lead. A wall clock stepped forward
/// (a bad NTP source, an operator) therefore does not expire every active upload at once;
/// a clock stepped back only delays expiry.
#[derive(Default)]
struct ExpiryClock {
    anchor: Option<(u64, Instant)>,
    warned: bool,
}

impl ExpiryClock {
    fn now(&mut self, wall: u64) -> u64 {
        let (w0, t0) = *self.anchor.get_or_insert((wall, Instant::now()));
        let steady = w0.saturating_add(t0.elapsed().as_millis() as u64);
        if wall > steady + CLOCK_STEP_MS {
            if !self.warned {
                tracing::warn!(
                    ahead_ms = wall - steady,
                    "the wall clock stepped forward; uploads expire by the monotonic clock"
                );
                self.warned = true;
            }
        } else {
            self.warned = false;
        }
        wall.min(steady)
    }
}

/// Periodic work: the leader expires idle uploads and collects garbage objects; every node frees
/// staging of uploads that ended and re-queues staged chunks whose offload was lost.
pub(super) async fn sweeper(
    ctx: Arc<Ctx>,
    done: mpsc::UnboundedSender<Done>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(ctx.config.sweep_interval_secs));
    // When this node, as leader, first looked at each peer: a peer never heard from since is
    // given the grace time from then.
    let mut leader_since: HashMap<u64, Instant> = HashMap::new();
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Orphan multipart uploads are looked for when this node becomes leader, then now and then.
    let mut orphans_checked: Option<Instant> = None;
    let mut clock = ExpiryClock::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if ctx.meta.is_leader() {
            match ctx
                .quota
                .propose(Command::ExpireUploads {
                    now: clock.now(now_ms()),
                    retention_ms: Some(ctx.upload_retention_ms),
                })
                .await
            {
                Ok(Outcome::Expired(ids)) if !ids.is_empty() => {
                    tracing::info!(count = ids.len(), ?ids, "expired idle uploads");
                }
                Err(e) => tracing::warn!(error = %e, "expiring uploads failed"),
                _ => {}
            }
            prune_old(&ctx, clock.now(now_ms())).await;
            purge_trash(&ctx, clock.now(now_ms())).await;
            index_entries(&ctx).await;
            count_usage(&ctx).await;
            collect_garbage(&ctx).await;
            declare_lost_nodes(&ctx, &mut leader_since).await;
            let every = Duration::from_secs(ctx.config.orphan_grace_secs.clamp(1, 600));
            if orphans_checked.is_none_or(|t| t.elapsed() >= every) {
                orphans_checked = Some(Instant::now());
                if let Err(e) = abort_orphan_multiparts(&ctx).await {
                    tracing::warn!(error = %e, "looking for orphan multipart uploads failed");
                }
            }
        } else {
            leader_since.clear();
            orphans_checked = None;
            clock = ExpiryClock::default();
        }
        if let Err(e) = sweep_staging(&ctx).await {
            tracing::warn!(error = %e, "sweeping staging failed");
        }
        // Recount from the disk: corrects what the running count could not know (a chunk
        // whose length was forgotten), unless a chunk came or went while the disk was read.
        let staging = ctx.staging.clone();
        let recount = ctx.staged.begin_recount();
        if let Ok(bytes) = tokio::task::spawn_blocking(move || staged_chunk_bytes(&staging)).await {
            ctx.staged.finish_recount(recount, bytes);
        }
        let _ = done.send(Done::Rescan);
    }
}

/// Drops the events older than `events.retention_secs`, then the audit records older than
/// `audit.retention_secs`.
async fn prune_old(ctx: &Ctx, now: u64) {
    let before = now.saturating_sub(ctx.event_retention_ms);
    prune_while_due(
        ctx,
        "events",
        |v| v.events_oldest_at(),
        before,
        Command::PruneEvents { before },
        PRUNE_PER_COMMAND,
    )
    .await;
    let before = now.saturating_sub(ctx.audit_retention_ms);
    prune_while_due(
        ctx,
        "audit records",
        |v| v.audit_oldest_at(),
        before,
        Command::PruneAudit { before },
        wharf_raft::model::audit::PRUNE_PER_COMMAND,
    )
    .await;
}

/// Proposes `prune` (which drops at most `per_command` records made before `before`) while
/// the oldest record kept is older than that: nothing is proposed when none is due.
async fn prune_while_due(
    ctx: &Ctx,
    what: &str,
    oldest: impl Fn(&wharf_raft::StateView) -> Option<u64>,
    before: u64,
    prune: Command,
    per_command: usize,
) {
    for _ in 0..16 {
        if oldest(&ctx.meta.local()).is_none_or(|at| at >= before) {
            return;
        }
        match ctx.quota.propose(prune.clone()).await {
            Ok(Outcome::Pruned(n)) if n as usize >= per_command => continue,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "pruning old {what} failed");
                return;
            }
        }
    }
}

/// Purges what has been in the trash longer than `trash.retention_secs`, a bounded batch per
/// command, while some is due (nothing is proposed when none is).
async fn purge_trash(ctx: &Ctx, now: u64) {
    let before = now.saturating_sub(ctx.trash_retention_ms);
    for _ in 0..16 {
        if ctx.meta.local().trash_expired(before, 1).is_empty() {
            return;
        }
        match ctx
            .quota
            .propose(Command::PurgeExpiredTrash { before, now })
            .await
        {
            Ok(Outcome::Purged(false)) => continue,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "purging the trash failed");
                return;
            }
        }
    }
}

/// Puts the files stored before folders existed (a data dir of an older wharf) into their
/// owners' roots, a bounded batch per command, until the state says every file is indexed.
async fn index_entries(ctx: &Ctx) {
    let mut after = None;
    for _ in 0..64 {
        if ctx.meta.local().entries_indexed() {
            return;
        }
        match ctx.quota.propose(Command::IndexEntries { after }).await {
            Ok(Outcome::Indexed(Some(next))) => after = Some(next),
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "indexing files into folders failed");
                return;
            }
        }
    }
}

/// Counts the users of a data dir from before the usage totals into them, a bounded batch per
/// command, until the state says every user is counted.
async fn count_usage(ctx: &Ctx) {
    for _ in 0..64 {
        if ctx.meta.local().usage_counted() {
            return;
        }
        match ctx
            .quota
            .propose(Command::CountUsage { limit: 1_000 })
            .await
        {
            Ok(Outcome::Indexed(Some(_))) => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "counting the users' usage failed");
                return;
            }
        }
    }
}

/// Chunks staged only on a node that has not answered for the grace time count as missing
/// again, so that clients re-send them to a live node.
async fn declare_lost_nodes(ctx: &Ctx, leader_since: &mut HashMap<u64, Instant>) {
    // Open uploads are bounded by the users' concurrent-upload limits, not by the files kept.
    let holders: HashSet<u64> = ctx
        .meta
        .local()
        .open_uploads(usize::MAX)
        .iter()
        .flat_map(|u| u.chunks.iter())
        .filter_map(|c| match c {
            Chunk::Staged { node, .. } => Some(*node),
            _ => None,
        })
        .collect();
    for node in holders {
        if node == ctx.meta.node_id {
            continue;
        }
        let first_look = *leader_since.entry(node).or_insert_with(Instant::now);
        let silent_for = ctx
            .meta
            .peers
            .since_contact(node)
            .unwrap_or_else(|| first_look.elapsed())
            .min(first_look.elapsed());
        if silent_for < ctx.staging_grace {
            continue;
        }
        match ctx.meta.propose(Command::NodeLost { node }).await {
            Ok(Outcome::ChunksLost(n)) if n > 0 => {
                tracing::warn!(node, chunks = n, "node unreachable past the staging grace time: its staged chunks are missing again");
            }
            Err(e) => tracing::warn!(node, error = %e, "declaring a node's chunks lost failed"),
            _ => {}
        }
    }
}

/// Objects deleted per sweep at most.
const GARBAGE_BATCH: usize = 1_000;

async fn collect_garbage(ctx: &Ctx) {
    let garbage = ctx.meta.local().garbage(GARBAGE_BATCH);
    for g in garbage {
        let res = async {
            if let Some(mp) = &g.multipart_id {
                ctx.store.abort_multipart(&g.object_key, mp).await?;
            }
            ctx.store.delete(&g.object_key).await?;
            ctx.meta
                .propose(Command::ObjectDeleted {
                    object_key: g.object_key.clone(),
                })
                .await
                .map_err(Error::from)
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(key = %g.object_key, error = %e, "garbage collection failed; will retry");
        }
    }
}

/// Aborts the multipart uploads of the object store that no upload records and that are older
/// than `upload.orphan_grace_secs` (a younger one may be on its way to being recorded).
async fn abort_orphan_multiparts(ctx: &Ctx) -> std::io::Result<()> {
    let grace = Duration::from_secs(ctx.config.orphan_grace_secs);
    let pending = ctx.store.list_multipart().await?;
    if pending.iter().all(|p| p.age < grace) {
        return Ok(());
    }
    let known: HashSet<String> = {
        let applied = ctx.meta.local();
        let open = applied.open_uploads(usize::MAX);
        let garbage = applied.garbage(usize::MAX);
        open.into_iter()
            .filter_map(|u| u.multipart_id)
            .chain(garbage.into_iter().filter_map(|g| g.multipart_id))
            .collect()
    };
    for p in pending {
        if p.age >= grace && !known.contains(&p.id) {
            tracing::warn!(key = %p.key, id = %p.id, "aborting a multipart upload nothing records");
            ctx.store.abort_multipart(&p.key, &p.id).await?;
        }
    }
    Ok(())
}

/// Removes what interrupted receives left in staging: `.part` files (no receive outlives the
/// process). Run at start, before anything is received.
pub fn clean_partial_chunks(staging: &std::path::Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for upload in std::fs::read_dir(staging)?.flatten() {
        if !upload.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for e in std::fs::read_dir(upload.path())?.flatten() {
            if e.file_name().to_string_lossy().contains(".part-") {
                std::fs::remove_file(e.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Removes the staging directories of uploads that are no longer uploading.
async fn sweep_staging(ctx: &Ctx) -> std::io::Result<()> {
    // The directories first, the open uploads second: a chunk's directory is made only after
    // its upload was applied here, so an upload created during the sweep is never taken for
    // an ended one.
    let mut dirs = Vec::new();
    let mut dir = tokio::fs::read_dir(&ctx.staging).await?;
    while let Some(entry) = dir.next_entry().await? {
        dirs.push(entry);
    }
    let active: HashSet<String> = ctx
        .meta
        .local()
        .open_upload_ids(None, usize::MAX)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    for entry in dirs {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == super::single::SINGLE_DIR {
            forget_stale_bodies(&entry.path()).await;
            continue;
        }
        if !active.contains(&name) {
            remove_upload_dir(&ctx.staged, &entry.path()).await;
        }
    }
    Ok(())
}

/// Bodies of one-request uploads that a crash left behind (a request lives seconds).
async fn forget_stale_bodies(dir: &std::path::Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        let old = e
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExpiryClock;

    #[test]
    fn a_wall_clock_stepped_forward_does_not_move_expiry_time() {
        let mut c = ExpiryClock::default();
        let start = 1_000_000;
        assert_eq!(c.now(start), start);
        // A day ahead a moment later: expiry time moves by the moment only.
        let later = c.now(start + 86_400_000);
        assert!(later >= start && later < start + 1_000, "{later}");
        // Stepped back: expiry goes by the wall clock (later, never sooner).
        assert_eq!(c.now(start - 5_000), start - 5_000);
    }
}
