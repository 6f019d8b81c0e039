//! Building blocks shared by the adapter and handler tests: the store over the shared
//! emulator, and plain actions and audit events to write into it.

use crate::emulator::sdk_config_for;
use crate::stack::shared_emulator;
use actiongate::domain::action::{Step, StepKind};
use actiongate::domain::{Action, ActionId, AuditEvent, Status, Tier, UserId};
use actiongate::store::Store;
use chrono::{DateTime, Utc};
use serde_json::json;

/// The store over the tables the shared emulator provisioned from the template.
pub async fn store() -> Store {
    let (endpoint, provisioned) = shared_emulator();
    let sdk = sdk_config_for(&endpoint).await;
    Store::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        provisioned.table("ActionsTable").unwrap(),
        provisioned.table("AuditTable").unwrap(),
    )
}

/// The name of the main table the shared emulator provisioned.
pub fn actions_table() -> String {
    shared_emulator().1.table("ActionsTable").unwrap().to_owned()
}

/// A one-step tier-1 `gmail.flag` action of `owner` in `status`, created at `at`.
pub fn action(owner: &UserId, status: Status, at: DateTime<Utc>) -> Action {
    action_of(owner, status, at, "gmail.flag", json!({"message_id": "m1"}))
}

/// A one-step tier-1 action of `action_type` with `payload`.
pub fn action_of(
    owner: &UserId,
    status: Status,
    at: DateTime<Utc>,
    action_type: &str,
    payload: serde_json::Value,
) -> Action {
    Action {
        action_id: ActionId::new_v7(at),
        user_id: owner.clone(),
        action_type: action_type.into(),
        payload: payload.clone(),
        steps: vec![Step::new(0, StepKind::Action { action_type: action_type.into(), payload })],
        status,
        tier: Some(Tier::Auto),
        risk_score: None,
        confidence: Some(0.9),
        priority: 0,
        scheduled_for: None,
        rate_limit_key: None,
        approver: None,
        reasons: vec!["auto_execute".into()],
        attempts: 0,
        max_attempts: 3,
        approval_expires_at: None,
        created_at: at,
        updated_at: at,
        result: None,
        error: None,
        idempotency_key: None,
        approval_token_hash: None,
        decided_by: None,
        decided_at: None,
        decision_reason: None,
        lease_expires_at: None,
        hold_reason: None,
        hold_until: None,
        approval_reminded: false,
        requester_email: None,
        not_before: None,
        approval_mail_pending: false,
        approval_mail_attempts: 0,
        auto_started: false,
        version: 1,
    }
}

/// The audit event of a move of `a`.
pub fn event(a: &Action, seq: u64, from: Option<Status>, to: Status) -> AuditEvent {
    AuditEvent {
        action_id: a.action_id,
        seq,
        at: a.updated_at,
        actor: "test".into(),
        from,
        to,
        reason: "test".into(),
        detail: None,
        request_id: None,
        source_ip: None,
        user_agent: None,
    }
}
