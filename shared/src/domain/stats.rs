//! Daily outcome counters: which counters a transition that finishes work adds one to, for
//! the user and for everyone.

use crate::domain::{Action, Status, Tier, UserId};

/// The scope of everyone's daily outcome counters.
pub const STATS_ALL: &str = "all";

/// The scope of one user's daily outcome counters.
pub fn user_stats_scope(user: &UserId) -> String {
    format!("user#{user}")
}

/// The counters a move from `before` to `after` adds one to (none unless it finishes work:
/// `completed`, `failed`, `rolled_back`).
pub fn outcome_fields(before: &Action, after: &Action) -> Vec<String> {
    if before.status == after.status {
        return Vec::new();
    }
    let t = &after.action_type;
    let auto = after.tier == Some(Tier::Auto);
    match after.status {
        Status::Completed => vec![
            if auto { "auto_executed".into() } else { "approved_executed".into() },
            format!("t#{t}#executed"),
            format!("t#{t}#succeeded"),
        ],
        Status::Failed => vec!["failed".into(), format!("t#{t}#executed"), format!("t#{t}#failed")],
        Status::RolledBack => vec!["rolled_back".into(), format!("t#{t}#rolled_back")],
        _ => Vec::new(),
    }
}
