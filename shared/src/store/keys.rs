//! Every key of the single-table design, built in one place.
//!
//! Main table (`pk`, `sk`):
//! | item | pk | sk | other keys |
//! |---|---|---|---|
//! | action | `ACTION#<id>` | `ACTION` | `gsi1` = owner / id, `gsi2` = owner+status / id, `due` = sweep bucket / due time |
//! | idempotency record | `IDEM#<user>#<key>` | `IDEM` | TTL |
//! | rate counter | `RATE#<scope>#<window>#<start>` | `RATE` | TTL |
//! | entity cool-down | `COOLDOWN#<user>#<rate_limit_key>` | `COOLDOWN` | TTL |
//! | user profile | `USER#<user>` | `PROFILE` | |
//! | approval link | `APPROVAL#<sha256 of token>` | `APPROVAL` | TTL |
//! | step snapshot | `SNAPSHOT#<action id>` | `STEP#<index>` | TTL = taken + rollback retention |
//! | daily outcome counters | `STATS#<scope>#<day>` | `STATS` | TTL |
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

pub fn idempotency_pk(user: &UserId, key: &IdempotencyKey) -> String {
    format!("IDEM#{user}#{}", key.as_str())
}
pub const IDEMPOTENCY_SK: &str = "IDEM";

/// A fixed-window counter: `scope` names what is counted (`<user>#<type>`, `auto#all`, …).
pub fn rate_counter_pk(scope: &str, window: Window, start: DateTime<Utc>) -> String {
    format!("RATE#{scope}#{}#{}", window.as_str(), start.timestamp())
}

/// The scope of everyone's automatic-execution counters.
pub const AUTO_ALL_SCOPE: &str = "auto#all";

/// The scope of one user's automatic-execution counters (a user named `all` must not share
/// everyone's).
pub fn auto_user_scope(user: &UserId) -> String {
    format!("auto#user#{user}")
}

pub const POLICY_PK: &str = "POLICY";
pub const POLICY_SK: &str = "CURRENT";
/// The audit stream of policy changes.
pub const POLICY_AUDIT_STREAM: &str = "policy";
pub const BREAKER_PK: &str = "BREAKER";
pub const BREAKER_SK: &str = "STATE";
/// The breaker item's top-level flag that creation checks (the document holds the rest).
pub const BREAKER_OPEN: &str = "open";
/// Successes of automatic work counted on the breaker item since its document was written.
pub const BREAKER_SUCCESSES: &str = "successes";
/// The audit stream of the circuit breaker (the audit table's key is otherwise an action id).
pub const BREAKER_AUDIT_STREAM: &str = "circuit-breaker";

/// The scope of everyone's daily outcome counters.
pub const STATS_ALL: &str = "all";

/// The scope of one user's daily outcome counters.
pub fn user_stats_scope(user: &UserId) -> String {
    format!("user#{user}")
}

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
/// The audit stream of administrative changes to a user (KYC, stored credentials).
pub fn user_audit_stream(user: &UserId) -> String {
    format!("user#{user}")
}
pub const GOOGLE_CREDENTIAL_SK: &str = "CREDENTIAL#google";

/// Where the sweep finds an action that has timed work, and when it is due: a sparse index,
/// so the sweep queries exactly the due items and never scans.
pub fn sweep_due(action: &Action) -> Option<(String, String)> {
    let due: DateTime<Utc> = match action.status {
        Status::Pending => {
            action.runnable_at().unwrap_or(action.created_at).max(action.hold_until.unwrap_or(action.created_at))
        }
        // An undelivered approval mail is sent again soon; a reminder comes next, then the expiry.
        Status::AwaitingApproval if action.approval_mail_pending => {
            // 1, 2, 4, 8 … minutes after the last try (the first right after intake).
            let retry = action.updated_at + chrono::Duration::minutes(1 << action.approval_mail_attempts.min(6));
            action.approval_expires_at.map_or(retry, |e| e.min(retry))
        }
        Status::AwaitingApproval => {
            // A reminder whose mail failed is tried again after the same backoff.
            let reminder = action.approval_reminder_at().map(|at| match action.approval_mail_attempts {
                0 => at,
                n => at.max(action.updated_at + chrono::Duration::minutes(1 << n.min(6))),
            });
            match (reminder, action.approval_expires_at) {
                (Some(r), Some(e)) => r.min(e),
                (r, e) => r.or(e)?,
            }
        }
        // Queued work that no executor has claimed a while after it became runnable was lost
        // between the store and the queue (or dead-lettered); the sweep re-sends it.
        Status::Queued => {
            action.updated_at.max(action.runnable_at().unwrap_or(action.updated_at)) + chrono::Duration::minutes(5)
        }
        // A rollback whose worker stopped (its lease ran out) is resumed.
        Status::RollingBack => action.lease_expires_at.unwrap_or(action.updated_at),
        // A failed plan owed a compensation the sweep handed over; sent again if not started.
        Status::Failed if action.compensation_due => action.updated_at + chrono::Duration::minutes(1),
        // A lease that runs out means the executor died: the sweep recovers the step.
        Status::Executing => action.lease_expires_at.unwrap_or(action.updated_at),
        // A wait whose schedule never fired is resumed by the sweep.
        Status::Waiting => {
            action.steps.get(action.next_step()).and_then(|s| s.wake_at).unwrap_or(action.updated_at)
                + chrono::Duration::minutes(5)
        }
        _ => return None,
    };
    Some((format!("DUE#{}", action.status), format!("{}#{}", crate::clock::format_time(due), action.action_id)))
}
