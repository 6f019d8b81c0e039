//! The audit streams that are not an action's: their names are the audit table's key and
//! part of the admin API.

use crate::domain::UserId;

/// The audit stream of policy changes.
pub const POLICY_AUDIT_STREAM: &str = "policy";

/// The audit stream of the circuit breaker (the audit table's key is otherwise an action id).
pub const BREAKER_AUDIT_STREAM: &str = "circuit-breaker";

/// The audit stream of administrative changes to a user (KYC, stored credentials).
pub fn user_audit_stream(user: &UserId) -> String {
    format!("user#{user}")
}

/// The audit stream of one integration's circuit breaker.
pub fn integration_audit_stream(name: &str) -> String {
    format!("integration#{name}")
}
