//! The scan policy: whether this node scans, and what it serves in each state of a file's scan.
//!
//! It is decided at start from `scan.policy` and `scan.clamd`, and may tighten at run time: a
//! node with no clamd configured keeps looking for one (`scan.clamd_probe`), and once one
//! answers, here or on any node of the cluster (recorded in Raft by `ScannerFound`), only clean
//! files are served. Nothing ever loosens it again short of a restart with another setting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wharf_raft::model::ScanState;

use super::clamd::Clamd;
use super::{ScanCtx, ScanHandle};
use crate::config::ScanConfig;
use crate::error::{Error, Result};
use crate::meta::Metadata;
use crate::store::ObjectStore;

/// What `scan.policy` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    /// Empty: `Required` once a scanner exists, until then `Searching`.
    Auto,
    Required,
    Optional,
    Off,
}

/// What a node serves, now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `scan.policy = off`: no scanning here; every file but an infected one is served, through
    /// presigned URLs too.
    Off,
    /// `scan.policy = optional`: files are scanned but served before their verdict (the
    /// `x-wharf-scan` header says which); presigned URLs only for clean files.
    Optional,
    /// No clamd configured and none found yet, on this node or any other: new files are stored
    /// `unscanned` and served so; a file waiting for a scanner (`pending`: one exists somewhere)
    /// or that failed its scan is not; presigned URLs only for clean files.
    Searching,
    /// A scanner exists: only clean files are served.
    Required,
}

/// The node's scan policy; cheap to clone, shared by the scanner and the download paths.
#[derive(Clone, Debug)]
pub struct Policy {
    setting: Setting,
    /// `scan.clamd` is set, or `scan.policy = required`: new files wait `pending` for a scan.
    configured: bool,
    /// A clamd has answered this node since it started.
    found: Arc<AtomicBool>,
}

impl Policy {
    pub fn new(config: &ScanConfig) -> Self {
        let setting = match config.policy.as_str() {
            "required" => Setting::Required,
            "optional" => Setting::Optional,
            "off" => Setting::Off,
            _ => Setting::Auto,
        };
        Self {
            setting,
            configured: !config.clamd.is_empty() || setting == Setting::Required,
            found: Arc::default(),
        }
    }

    /// What is served now; `cluster_found`: the cluster has recorded a scanner
    /// (`StateView::scanner_found`).
    pub fn mode(&self, cluster_found: bool) -> Mode {
        match self.setting {
            Setting::Off => Mode::Off,
            Setting::Optional => Mode::Optional,
            Setting::Required => Mode::Required,
            Setting::Auto if self.configured || cluster_found || self.found() => Mode::Required,
            Setting::Auto => Mode::Searching,
        }
    }

    /// Whether this node scans at all (`scan.policy` is not `off`).
    pub fn scans(&self) -> bool {
        self.setting != Setting::Off
    }

    /// Whether a clamd is configured: new files wait for it, however long it is away.
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// Whether a clamd has answered this node (or one is configured): a scanner exists.
    pub fn found(&self) -> bool {
        self.found.load(Ordering::Acquire)
    }

    pub(super) fn set_found(&self) {
        self.found.store(true, Ordering::Release);
    }

    /// The clamd this node uses: `scan.clamd`, else where it looks for one.
    pub fn address(config: &ScanConfig) -> &str {
        if config.clamd.is_empty() {
            &config.clamd_probe
        } else {
            &config.clamd
        }
    }
}

fn infected(signature: &str) -> Error {
    Error::Infected(format!(
        "the file is infected ({signature}) and quarantined"
    ))
}

fn pending() -> Error {
    Error::conflict(
        "scan_pending",
        "the file is waiting for its virus scan; retry shortly",
    )
}

fn failed(message: &str) -> Error {
    Error::conflict(
        "scan_failed",
        format!("the file could not be scanned ({message}); an admin can rescan it"),
    )
}

/// Whether a file in scan state `scan` may be downloaded under `mode`: an infected file never;
/// a clean one always; the others as [`Mode`] says.
pub fn may_serve(mode: Mode, scan: &ScanState) -> Result<()> {
    match (mode, scan) {
        (_, ScanState::Infected { signature, .. }) => Err(infected(signature)),
        (_, ScanState::Clean { .. }) => Ok(()),
        (Mode::Off | Mode::Optional, _) => Ok(()),
        (Mode::Searching, ScanState::Unscanned) => Ok(()),
        (_, ScanState::Error { message, .. }) => Err(failed(message)),
        (_, ScanState::Unscanned | ScanState::Pending | ScanState::Scanning { .. }) => {
            Err(pending())
        }
    }
}

/// Whether a presigned URL may be handed out for a file in scan state `scan`: only for a clean
/// one, unless scanning is off. A URL cannot be taken back once handed out: it must never be
/// for a file whose verdict is still to come.
pub fn may_presign(mode: Mode, scan: &ScanState) -> Result<()> {
    match (mode, scan) {
        (Mode::Off, _) => may_serve(mode, scan),
        (_, ScanState::Clean { .. }) => Ok(()),
        (Mode::Searching | Mode::Optional, ScanState::Unscanned) => Err(Error::conflict(
            "not_scanned",
            "presigned URLs are only for files a virus scan found clean, and no scanner has \
             checked this one: download it through /content",
        )),
        // Pending, failed or infected: what a download under `required` answers.
        _ => may_serve(Mode::Required, scan),
    }
}

/// Decides the scan policy and starts the scan-dispatch actor unless scanning is off. The
/// handle is for new files to wait for: given only when a clamd is configured (with none, new
/// files are stored unscanned until a scanner is found; then the model stores them pending).
pub async fn start(
    config: &ScanConfig,
    meta: &Metadata,
    store: &Arc<dyn ObjectStore>,
    stop: &CancellationToken,
) -> (Policy, Option<ScanHandle>) {
    let policy = Policy::new(config);
    if !policy.scans() {
        tracing::info!("scan.policy = off: files are stored and served unscanned");
        return (policy, None);
    }
    let address = Policy::address(config);
    let clamd = Clamd::parse(address).expect("validated");
    match clamd.version().await {
        Ok(v) => {
            tracing::info!(clamd = address, version = %v, "scanner found");
            policy.set_found();
        }
        Err(e) if policy.configured() => {
            tracing::warn!(clamd = address, error = %e, "clamd does not answer yet; files wait for it (pending)");
        }
        Err(_) => tracing::warn!(
            clamd = address,
            every_secs = config.probe_secs,
            "no clamd answers: files are stored and served unscanned until one does (looking \
             for one at scan.clamd_probe)"
        ),
    }
    let ctx = Arc::new(ScanCtx {
        meta: meta.clone(),
        store: store.clone(),
        clamd,
        config: config.clone(),
        policy: policy.clone(),
    });
    let handle = ScanHandle::spawn(ctx, stop.clone());
    let for_new_files = policy.configured().then_some(handle);
    (policy, for_new_files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(setting: &str, clamd: &str) -> Policy {
        Policy::new(&ScanConfig {
            policy: setting.into(),
            clamd: clamd.into(),
            ..ScanConfig::default()
        })
    }

    fn code(r: Result<()>) -> String {
        use axum::response::IntoResponse;
        match r {
            Ok(()) => "ok".into(),
            Err(e) => e.into_response().status().as_u16().to_string(),
        }
    }

    #[test]
    fn the_mode_only_tightens_once_a_scanner_exists() {
        let auto = policy("", "");
        assert_eq!(auto.mode(false), Mode::Searching);
        assert_eq!(auto.mode(true), Mode::Required);
        auto.set_found();
        assert_eq!(auto.mode(false), Mode::Required);
        assert_eq!(policy("", "tcp://127.0.0.1:1").mode(false), Mode::Required);
        assert!(policy("", "tcp://127.0.0.1:1").configured());
        assert!(policy("required", "").configured());
        assert!(!policy("optional", "").configured());
        assert_eq!(policy("off", "").mode(true), Mode::Off);
        assert!(!policy("off", "").scans());
        assert_eq!(policy("optional", "").mode(true), Mode::Optional);
    }

    #[test]
    fn only_clean_files_get_presigned_urls_unless_scanning_is_off() {
        let states = [
            ScanState::Unscanned,
            ScanState::Pending,
            ScanState::Scanning {
                holder: 1,
                until: 0,
            },
            ScanState::Clean { at: 0 },
            ScanState::Error {
                message: "x".into(),
                at: 0,
            },
            ScanState::Infected {
                signature: "x".into(),
                at: 0,
            },
        ];
        let serve = |m| {
            states
                .iter()
                .map(|s| code(may_serve(m, s)))
                .collect::<Vec<_>>()
        };
        let presign = |m| {
            states
                .iter()
                .map(|s| code(may_presign(m, s)))
                .collect::<Vec<_>>()
        };
        let v = |a: [&str; 6]| a.map(String::from).to_vec();
        assert_eq!(
            serve(Mode::Required),
            v(["409", "409", "409", "ok", "409", "403"])
        );
        assert_eq!(
            serve(Mode::Searching),
            v(["ok", "409", "409", "ok", "409", "403"])
        );
        assert_eq!(
            serve(Mode::Optional),
            v(["ok", "ok", "ok", "ok", "ok", "403"])
        );
        assert_eq!(serve(Mode::Off), v(["ok", "ok", "ok", "ok", "ok", "403"]));
        for m in [Mode::Required, Mode::Searching, Mode::Optional] {
            assert_eq!(
                presign(m),
                v(["409", "409", "409", "ok", "409", "403"]),
                "{m:?}"
            );
        }
        assert_eq!(presign(Mode::Off), v(["ok", "ok", "ok", "ok", "ok", "403"]));
    }
}
