//! A crash between a side effect and its recording, on a stack of its own (the crash takes
//! the function server down for a moment, which must not disturb other tests).

mod common;

use actiongate_local::stack::shared_with;
use common::{someone, wait_for_status, Api};
use serde_json::{json, Value};

/// The executor may simulate a crash here (see `executor::FAULT_INJECTION_VAR`).
fn api() -> Api {
    Api { stack: shared_with(&[("ACTIONGATE_FAULT_INJECTION", "1")]), http: reqwest::Client::new() }
}

const APPROVER: &str = "ops@example.com";

async fn fake_state(api: &Api) -> Value {
    api.http.get(format!("{}/_fake/state", api.stack.fakes_url)).send().await.unwrap().json().await.unwrap()
}

fn effects_on(state: &Value, path: &str) -> usize {
    state["effects"].as_array().unwrap().iter().filter(|e| e["path"] == path).count()
}

fn deliveries_to(state: &Value, path: &str) -> usize {
    state["deliveries"].as_array().unwrap().iter().filter(|e| e["path"] == path).count()
}

/// Creates a webhook action and approves it through the API; returns its id.
async fn approved_webhook(api: &Api, owner: &str, path: &str, extra: Value) -> String {
    let mut body = json!({"action_type": "http_request", "payload": {"method": "POST", "url": format!("{}{path}", api.stack.fakes_url), "body": {"n": 1}}, "approver": APPROVER});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let created = api.post("/actions", owner, body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    let approved = api.post(&format!("/actions/{id}/approve"), APPROVER, json!({})).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    id
}

async fn trail(api: &Api, owner: &str, id: &str) -> Vec<Value> {
    api.get(&format!("/actions/{id}/audit"), owner).await.body["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_crash_after_the_side_effect_loses_nothing_and_runs_nothing_twice() {
    let api = api();
    let owner = someone("alice");
    let path = format!("/hook/ok-crash-{}", someone("x"));
    // The executor aborts right after the webhook answered, before recording it.
    let id = approved_webhook(&api, &owner, &path, json!({"rate_limit_key": "fault:abort-after-effect"})).await;
    let done = wait_for_status(&api, &owner, &id, &["completed", "failed"], 120).await;
    assert_eq!(done["status"], "completed", "{done}");
    let state = fake_state(&api).await;
    assert_eq!(deliveries_to(&state, &path), 2, "delivered again after the crash");
    assert_eq!(effects_on(&state, &path), 1, "the receiver honoured the idempotency key: one effect");
    let events = trail(&api, &owner, &id).await;
    assert!(
        events.iter().any(|e| e["from"] == "executing"
            && e["to"] == "queued"
            && e["reason"].as_str().unwrap().contains("lease expired")),
        "{events:?}"
    );
    assert_eq!(done["attempts"], 2);
}
