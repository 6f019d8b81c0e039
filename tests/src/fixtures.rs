//! Building blocks shared by the adapter and handler tests: the store over the shared
//! emulator, and plain actions and audit events to write into it.

use crate::emulator::sdk_config_for;
use crate::stack::shared_emulator;
use actiongate::adapters::aws::dynamo::DynamoStore;
use actiongate::domain::action::StepKind;
use actiongate::domain::{Action, AuditEvent, Status, Tier, UserId};
use chrono::{DateTime, Utc};
use serde_json::json;

/// The store over the tables the shared emulator provisioned from the template.
pub async fn store() -> DynamoStore {
    let (endpoint, provisioned) = shared_emulator();
    let sdk = sdk_config_for(&endpoint).await;
    DynamoStore::new(
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
    let step = StepKind::Action { action_type: action_type.into(), payload: payload.clone() };
    let mut action = Action::new(owner.clone(), action_type, payload, vec![step], at);
    action.status = status;
    action.tier = Some(Tier::Auto);
    action.confidence = Some(0.9);
    action.reasons = vec!["auto_execute".into()];
    action.max_attempts = 3;
    action
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
