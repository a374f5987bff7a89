//! Bugs planted on purpose, so that the chaos harness can show its checkers catch them.
//!
//! They exist only in a build with the `planted-bugs` feature (the `wharf-planted` binary,
//! which only `wharf-chaos` uses), and only the one named by `WHARF_PLANTED_BUG` is active. In
//! the `wharf` binary [`active`] is a constant `false` and the bugs compile away.

/// Every planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// A chunk is acknowledged before `ChunkStaged` is committed (recorded a second later, if
    /// the proposal gets through at all). The durability checker must report acknowledged
    /// chunks that the cluster does not have.
    AckBeforeCommit,
    /// The state machine is not asked to reserve quota (only the proposer's local pre-check
    /// runs), so racing creates over-commit. The quota checker must report it.
    SkipQuotaReservation,
    /// `GET /v1/files/{id}` answers from the node's applied state without a read index. The
    /// linearizability checker must report stale reads.
    StaleReads,
    /// The webhook delivery loop acknowledges the events of every fifth log entry without
    /// sending them. The webhook checker must report completions never delivered.
    WebhookAckUnsent,
}

impl Bug {
    pub const ALL: [Bug; 4] = [
        Bug::AckBeforeCommit,
        Bug::SkipQuotaReservation,
        Bug::StaleReads,
        Bug::WebhookAckUnsent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::SkipQuotaReservation => "skip-quota-reservation",
            Bug::StaleReads => "stale-reads",
            Bug::WebhookAckUnsent => "webhook-ack-unsent",
        }
    }
}

/// Whether `bug` is planted in this process.
#[cfg(feature = "planted-bugs")]
pub fn active(bug: Bug) -> bool {
    static PLANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PLANTED
        .get_or_init(|| std::env::var("WHARF_PLANTED_BUG").ok())
        .as_deref()
        == Some(bug.name())
}

/// Whether `bug` is planted in this process: never, in a build without `planted-bugs`.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub fn active(_bug: Bug) -> bool {
    false
}
