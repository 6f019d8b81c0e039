//! Rejection memory: a human's rejection is remembered by the request's fingerprint (user,
//! type, canonical payload and plan), so an agent that proposes the same thing again learns
//! why instead of looping (409 `previously_rejected`). The record is written with the rejection
//! itself, in the same write, and an administrator may `force` past it.

use crate::domain::{Action, ActionId, Status, StepKind, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The longest a policy may remember a rejection (the record's TTL is a little longer).
pub const MAX_MEMORY_DAYS: u64 = 90;

/// A remembered rejection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub action_id: ActionId,
    pub rejected_at: DateTime<Utc>,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `value` with every object's keys in order and whole numbers written as integers, so equal
/// payloads hash equally whatever order their keys came in (and `1.0` is `1`).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&map[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => value.clone(),
        },
        other => other.clone(),
    }
}

/// The fingerprint of `user` asking for `steps`: hex SHA-256 of the canonical JSON of both (the
/// steps carry their types, so a single action and the one-step plan of it match). `None` if
/// the steps cannot be serialized (then nothing is remembered or refused).
pub fn fingerprint(user: &UserId, steps: &[StepKind]) -> Option<String> {
    let steps = serde_json::to_value(steps).ok()?;
    let doc = serde_json::json!({"user": user, "steps": canonical(&steps)});
    // Serialized with sorted keys (canonical), so the text is the same for the same request.
    let text = canonical(&doc).to_string();
    Some(crate::domain::token::hex(&Sha256::digest(text.as_bytes())))
}

/// The fingerprint of a stored action (the same as that of the request that made it).
pub fn fingerprint_of(action: &Action) -> Option<String> {
    let kinds: Vec<StepKind> = action.steps.iter().map(|s| s.kind.clone()).collect();
    fingerprint(&action.user_id, &kinds)
}

/// The rejection a write moving `before` to `after` records: a human's `rejected` decision.
/// Not the rejection of tier-1 work sent to a human only because the breaker was open: that
/// human refused "run it now", not the request itself.
pub fn recorded_by(before: &Action, after: &Action) -> Option<(String, Rejection)> {
    if before.status != Status::AwaitingApproval || after.status != Status::Rejected {
        return None;
    }
    if after.reasons.iter().any(|r| r == "breaker_open_requires_approval") {
        return None;
    }
    let rejection = Rejection {
        action_id: after.action_id,
        rejected_at: after.decided_at.unwrap_or(after.updated_at),
        by: after.decided_by.clone().unwrap_or_else(|| "unknown".into()),
        reason: after.decision_reason.clone(),
    };
    Some((fingerprint_of(after)?, rejection))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(payload: Value) -> Vec<StepKind> {
        vec![StepKind::Action { action_type: "send_email".into(), payload }]
    }

    #[test]
    fn the_same_request_has_the_same_fingerprint_whatever_its_key_order() {
        let alice = UserId::parse("alice").unwrap();
        let a: Value = serde_json::from_str(r#"{"to":["b@x.com"],"subject":"hi","meta":{"x":1,"y":2}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"meta":{"y":2.0,"x":1},"subject":"hi","to":["b@x.com"]}"#).unwrap();
        assert_eq!(fingerprint(&alice, &step(a.clone())), fingerprint(&alice, &step(b)));
        let other = json!({"to": ["b@x.com"], "subject": "hello", "meta": {"x": 1, "y": 2}});
        assert_ne!(fingerprint(&alice, &step(a.clone())), fingerprint(&alice, &step(other)));
        let bob = UserId::parse("bob").unwrap();
        assert_ne!(fingerprint(&alice, &step(a.clone())), fingerprint(&bob, &step(a.clone())));
        let half = json!({"to": ["b@x.com"], "subject": "hi", "meta": {"x": 1.5, "y": 2}});
        assert_ne!(fingerprint(&alice, &step(a)), fingerprint(&alice, &step(half)));
    }
}
