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

/// A store over tables of its own in the shared emulator (the template's two tables under new
/// names): for checks of the store's single items (the breaker, the policy) and of indexes
/// that other tests' items would share.
pub async fn isolated_store() -> DynamoStore {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (endpoint, _) = shared_emulator();
    let sdk = sdk_config_for(&endpoint).await;
    let template = crate::template::Template::load(&crate::workspace_root().join("infra/template.yaml"))
        .expect("the template loads");
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut names = Vec::new();
    for logical in ["ActionsTable", "AuditTable"] {
        let mut spec = template.tables.iter().find(|t| t.logical_id == logical).expect("declared").clone();
        spec.logical_id = format!("{logical}-isolated-{}-{n}", std::process::id());
        crate::provision::create_table(&ddb, &spec).await.expect("the table is created");
        names.push(spec.logical_id);
    }
    DynamoStore::new(ddb, &names[0], &names[1])
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
