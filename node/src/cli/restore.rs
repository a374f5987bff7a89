//! `wharf cluster restore --from FILE`: a new one-node cluster from a metadata backup.
//!
//! The backup's snapshot is installed in a new data dir at its log index (event ids and
//! webhook cursors are log indexes: the log goes on from there). The founder takes an id above
//! every node the old cluster had; the old nodes are removed (their certificates unpinned, the
//! chunks they staged lost) and the old join tokens revoked. The snapshot is built again so
//! joiners receive the state as fixed up here. Raft starts with the log purged through the
//! backup's index and a vote at its term: the founder elects itself at the next term.

use std::path::Path;

use anyhow::{bail, Context};
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::Vote;
use wharf_cluster::Identity;
use wharf_raft::model::Command;
use wharf_raft::store::backup;
use wharf_raft::WharfNode;

use crate::config::Config;

pub(super) async fn restore(config: &Config, from: &Path) -> anyhow::Result<()> {
    let data_dir = &config.node.data_dir;
    if Identity::exists(data_dir) || data_dir.join("raft").exists() {
        bail!(
            "{} already holds a node: restore into a new data dir",
            data_dir.display()
        );
    }
    let (peer, http) = (config.cluster.peer_addr, config.node.http_addr);
    if peer.port() == 0 || http.port() == 0 {
        bail!(
            "the restored node is recorded at its addresses: give fixed ports (node.http_addr and \
             cluster.peer_addr), not 0"
        );
    }
    let me = WharfNode {
        peer_addr: match config.cluster.advertise_addr.as_str() {
            "" => peer.to_string(),
            a => a.to_string(),
        },
        http_addr: http.to_string(),
    };
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    crate::private_dir(data_dir)?;
    // Outside `raft/snapshots/`, which the store keeps to its own files.
    let snap_path = data_dir.join("restore.snapshot");
    let (header, hash) = backup::read(from, Some(&snap_path))
        .with_context(|| format!("reading {}", from.display()))?;
    let Some(last) = header.meta.last_log_id else {
        bail!("the backup holds no applied entry: nothing to restore");
    };

    let raft_dir = data_dir.join("raft");
    std::fs::create_dir_all(&raft_dir)?;
    let opts = wharf_raft::Options::for_node(1, config.raft.cache_capacity);
    let (mut log, mut sm) = wharf_raft::open(&raft_dir, &opts)?;
    let file = tokio::fs::File::open(&snap_path).await?;
    sm.install_snapshot(&header.meta, Box::new(file))
        .await
        .context("installing the backup's snapshot")?;
    let _ = std::fs::remove_file(&snap_path);

    // The old cluster's nodes: the founder's id is above all of them.
    let view = sm.view();
    let mut old: Vec<u64> = view.nodes().iter().map(|n| n.id).collect();
    old.extend(
        header
            .meta
            .last_membership
            .membership()
            .nodes()
            .map(|(id, _)| *id),
    );
    old.sort_unstable();
    old.dedup();
    let founder = old
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(view.last_node_id())
        + 1;
    let tokens: Vec<String> = view.join_tokens().into_iter().map(|t| t.id).collect();
    drop(view);

    crate::init_cluster(data_dir, founder, &config.auth, None)?;
    let identity = Identity::load(data_dir)?;
    let mut cmds: Vec<Command> = Vec::new();
    for &node in &old {
        cmds.push(Command::NodeLost { node });
        cmds.push(Command::RemoveNode { node });
    }
    cmds.extend(tokens.into_iter().map(|id| Command::RevokeJoinToken { id }));
    cmds.push(Command::NodeCertIssued {
        node: founder,
        cert_pem: identity.cert_pem.clone(),
    });
    sm.refound(cmds, founder, me.clone())?;
    // Joiners get this state, not the backup's.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .context("building the restored snapshot")?;
    log.save_vote(&Vote::new(last.leader_id.term, founder))
        .await
        .context("writing the vote")?;
    log.save_committed(Some(last)).await?;
    log.purge(last).await.context("purging the log")?;
    drop((log, sm));
    println!(
        "restored the metadata at log index {} (backup blake3 {hash}) into {} as node {founder} \
         of a new cluster at {}; start it with `wharf node start --data-dir {}` (same \
         addresses), then join others with `wharf cluster token`. Tokens signed by the old \
         cluster's secret are not accepted: issue new ones.",
        last.index,
        data_dir.display(),
        me.peer_addr,
        data_dir.display()
    );
    Ok(())
}
