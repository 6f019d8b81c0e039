//! Every key of the single-table design, built in one place.
//!
//! Main table (`pk`, `sk`):
//! | item | pk | sk | other keys |
//! |---|---|---|---|
//! | action | `ACTION#<id>` | `ACTION` | `gsi1` = owner / id, `gsi2` = owner+status / id, `due` = sweep bucket / due time |
//! | inbox entry (one per undecided approver while it waits) | `ACTION#<id>` | `INBOX#<approver>` | `gsi3` = approver / id (a copy of the action) |
//! | idempotency record | `IDEM#<user>#<key>` | `IDEM` | TTL |
//! | rate counter | `RATE#<scope>#<window>#<start>` | `RATE` | TTL |
//! | entity cool-down | `COOLDOWN#<user>#<rate_limit_key>` | `COOLDOWN` | TTL |
//! | user profile | `USER#<user>` | `PROFILE` | |
//! | approval link | `APPROVAL#<sha256 of token>` | `APPROVAL` | TTL |
//! | step snapshot | `SNAPSHOT#<action id>` | `STEP#<index>` | TTL = taken + rollback retention |
//! | daily outcome counters | `STATS#<scope>#<day>` | `STATS` | TTL |
//! | integration breaker | `INTEGRATION` | `<integration name>` | |
//!
//! Audit table (`action_id`, `seq`): append-only, one item per transition.

use crate::domain::{Action, ActionId, IdempotencyKey, Status, UserId};
use crate::policy::Window;
use chrono::{DateTime, Utc};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const GSI_BY_USER: &str = "by_user";
pub const GSI1_PK: &str = "gsi1pk";
pub const GSI1_SK: &str = "gsi1sk";
pub const GSI_BY_USER_STATUS: &str = "by_user_status";
pub const GSI2_PK: &str = "gsi2pk";
pub const GSI2_SK: &str = "gsi2sk";
pub const GSI_BY_APPROVER: &str = "by_approver";
pub const GSI3_PK: &str = "gsi3pk";
pub const GSI3_SK: &str = "gsi3sk";
pub const GSI_BY_STATUS: &str = "by_status";
pub const GSI4_PK: &str = "gsi4pk";
pub const GSI4_SK: &str = "gsi4sk";
pub const GSI_BY_DAY: &str = "by_day";
pub const GSI5_PK: &str = "gsi5pk";
pub const GSI5_SK: &str = "gsi5sk";
pub const GSI_DUE: &str = "due";
pub const DUE_PK: &str = "due_pk";
pub const DUE_SK: &str = "due_sk";
pub const TTL: &str = "ttl";
pub const AUDIT_PK: &str = "action_id";
pub const AUDIT_SK: &str = "seq";

pub fn action_pk(id: ActionId) -> String {
    format!("ACTION#{id}")
}
pub const ACTION_SK: &str = "ACTION";

pub fn user_partition(user: &UserId) -> String {
    format!("USER#{user}")
}

pub fn user_status_partition(user: &UserId, status: Status) -> String {
    format!("USER#{user}#{status}")
}

/// Everyone's actions of one status (`by_status`), for administrators' listings.
pub fn status_partition(status: Status) -> String {
    format!("STATUS#{status}")
}

/// Everyone's actions created on one UTC day (`by_day`), for administrators' listings.
pub fn day_partition(day: chrono::NaiveDate) -> String {
    format!("DAY#{}", day.format("%Y-%m-%d"))
}

/// The smallest action id (as text) created at `at` or later: ids are UUIDv7, their first 48
/// bits the creation time in milliseconds, so a time range is a range of ids.
pub fn id_floor(at: chrono::DateTime<chrono::Utc>) -> String {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0) & 0xffff_ffff_ffff;
    format!("{:08x}-{:04x}", ms >> 16, ms & 0xffff)
}

pub fn idempotency_pk(user: &UserId, key: &IdempotencyKey) -> String {
    format!("IDEM#{user}#{}", key.as_str())
}
pub const IDEMPOTENCY_SK: &str = "IDEM";

/// A fixed-window counter: `scope` names what is counted (`<user>#<type>`, `auto#all`, …).
pub fn rate_counter_pk(scope: &str, window: Window, start: DateTime<Utc>) -> String {
    format!("RATE#{scope}#{}#{}", window.as_str(), start.timestamp())
}

pub use crate::domain::guards::{auto_user_scope, AUTO_ALL_SCOPE};
pub use crate::domain::stats::{user_stats_scope, STATS_ALL};
pub use crate::domain::streams::{user_audit_stream, BREAKER_AUDIT_STREAM, POLICY_AUDIT_STREAM};

pub const POLICY_PK: &str = "POLICY";
pub const POLICY_SK: &str = "CURRENT";
pub const BREAKER_PK: &str = "BREAKER";
pub const BREAKER_SK: &str = "STATE";
/// The breaker item's top-level flag that creation checks (the document holds the rest).
pub const BREAKER_OPEN: &str = "open";
/// Successes of automatic work counted on the breaker item since its document was written.
pub const BREAKER_SUCCESSES: &str = "successes";

/// Per-integration circuit breakers: one partition, the integration's name as sort key.
pub const INTEGRATION_PK: &str = "INTEGRATION";

/// Daily outcome counters: `scope` is [`STATS_ALL`] or [`user_stats_scope`], `day` is a UTC day
/// (`YYYY-MM-DD` in the key).
pub fn stats_pk(scope: &str, day: chrono::NaiveDate) -> String {
    format!("STATS#{scope}#{}", day.format("%Y-%m-%d"))
}
pub const STATS_SK: &str = "STATS";

/// A step's rollback snapshot, kept for the rollback retention (TTL).
pub fn snapshot_pk(id: ActionId) -> String {
    format!("SNAPSHOT#{id}")
}
pub fn snapshot_sk(step: usize) -> String {
    format!("STEP#{step:04}")
}

pub fn cooldown_pk(user: &UserId, entity: &str) -> String {
    format!("COOLDOWN#{user}#{entity}")
}
pub const COOLDOWN_SK: &str = "COOLDOWN";
pub const RATE_SK: &str = "RATE";

pub fn approval_pk(token_hash: &str) -> String {
    format!("APPROVAL#{token_hash}")
}
pub const APPROVAL_SK: &str = "APPROVAL";

pub fn profile_pk(user: &UserId) -> String {
    format!("USER#{user}")
}
pub const PROFILE_SK: &str = "PROFILE";
pub const GOOGLE_CREDENTIAL_SK: &str = "CREDENTIAL#google";

/// Where the sweep finds an action that has timed work, and when it is due: a sparse index,
/// so the sweep queries exactly the due items and never scans.
pub fn sweep_due(action: &Action) -> Option<(String, String)> {
    let due = crate::domain::execution::due_at(action)?;
    Some((format!("DUE#{}", action.status), format!("{}#{}", crate::domain::time::format_time(due), action.action_id)))
}

/// The partition of an action's status notifications (`crate::domain::notify`).
pub fn notification_pk(id: ActionId) -> String {
    format!("NOTIFY#{id}")
}

/// A notification's sort key: the action version it reports, zero-padded so they sort.
pub fn notification_sk(version: u64) -> String {
    format!("{version:020}")
}

/// The `due` index's partition of pending notifications.
pub const NOTIFICATION_DUE_PK: &str = "DUE#notify";

/// Where the sweep finds a pending notification, and when it is due.
pub fn notification_due(n: &crate::domain::notify::Notification) -> (String, String) {
    (
        NOTIFICATION_DUE_PK.to_owned(),
        format!("{}#{}#{}", crate::domain::time::format_time(n.next_attempt_at), n.action_id, n.version),
    )
}

/// A remembered rejection: one item per (user, request fingerprint), the newest one.
pub fn rejection_pk(user: &UserId, fingerprint: &str) -> String {
    format!("REJECTED#{user}#{fingerprint}")
}
pub const REJECTION_SK: &str = "REJECTION";

/// An action's inbox entry for one approver (lower-case address), beside the action item.
pub fn inbox_sk(approver: &str) -> String {
    format!("INBOX#{}", approver.to_ascii_lowercase())
}

/// The inbox partition of an approver (lower-case address).
pub fn approver_partition(approver: &str) -> String {
    format!("APPROVER#{}", approver.to_ascii_lowercase())
}
