//! A crash between a side effect and its recording, on a stack of its own (the crash takes
//! the function server down for a moment, which must not disturb other tests).

mod common;

use common::{approved_webhook, deliveries_to, effects_on, fake_state, someone, trail, wait_for_status, Api};
use serde_json::json;

/// The executor may simulate a crash here (see `config::ACTIONGATE_FAULT_INJECTION`).
fn api() -> Api {
    common::api_with(&[("ACTIONGATE_FAULT_INJECTION", "1")])
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
