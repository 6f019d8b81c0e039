//! End-to-end rollback: the fakes' state after an action, and after its rollback.

mod common;

use actiongate::ports::store::*;
use common::{
    approved_webhook, fake_state, seed_message, someone, store_google_token, trail, wait_for_status, Api, APPROVER,
};
use serde_json::{json, Value};

/// This suite's policy compensates failed plans automatically.
fn api() -> Api {
    common::api_with_policy(&[("compensate_on_failure = false", "compensate_on_failure = true")], &[])
}

async fn completed(api: &Api, owner: &str, body: Value) -> String {
    let r = api.post("/actions", owner, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["action_id"].as_str().unwrap().to_owned();
    if r.body["status"] == "awaiting_approval" {
        assert_eq!(api.post(&format!("/actions/{id}/approve"), APPROVER, json!({})).await.status, 200);
    }
    let done = wait_for_status(api, owner, &id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    id
}

async fn rollback(api: &Api, user: &str, id: &str, body: Value) -> common::Reply {
    api.post(&format!("/actions/{id}/rollback"), user, body).await
}

#[tokio::test]
async fn archive_then_rollback_restores_the_labels_exactly_and_twice_is_harmless() {
    let api = api();
    let owner = someone("alice");
    let message = someone("msg");
    seed_message(&api, &message).await;
    common::seed_labels(&api, &message, &["INBOX", "UNREAD", "IMPORTANT"]).await;
    store_google_token(&api, &owner).await;
    let id = completed(
        &api,
        &owner,
        json!({"action_type": "gmail.archive", "payload": {"message_id": message}, "confidence": 0.9}),
    )
    .await;
    assert_eq!(fake_state(&api).await["gmail"][&message], json!(["UNREAD", "IMPORTANT"]));

    let r = rollback(&api, &owner, &id, json!({"reason": "wrong message"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "rolled_back");
    assert_eq!(r.body["rolled_back_steps"], json!([0]));
    let mut labels: Vec<String> = serde_json::from_value(fake_state(&api).await["gmail"][&message].clone()).unwrap();
    labels.sort();
    assert_eq!(labels, vec!["IMPORTANT", "INBOX", "UNREAD"]);
    let again = rollback(&api, &owner, &id, json!({})).await;
    assert_eq!((again.status, again.body["status"].as_str()), (200, Some("rolled_back")));
    let moves: Vec<String> = trail(&api, &owner, &id)
        .await
        .iter()
        .map(|e| format!("{}>{}", e["from"].as_str().unwrap_or("-"), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(&moves[moves.len() - 2..], ["completed>rolling_back", "rolling_back>rolled_back"]);
}

#[tokio::test]
async fn a_created_calendar_event_is_gone_after_rollback() {
    let api = api();
    let owner = someone("alice");
    store_google_token(&api, &owner).await;
    let summary = someone("Review");
    let id = completed(
        &api,
        &owner,
        json!({"action_type": "calendar.create_event", "payload": {"summary": summary, "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z"}, "approver": APPROVER}),
    )
    .await;
    let has_event =
        |state: &Value| state["events"].as_object().unwrap().values().any(|e| e["summary"] == summary.as_str());
    assert!(has_event(&fake_state(&api).await));
    let r = rollback(&api, &owner, &id, json!({})).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("rolled_back")), "{}", r.body);
    assert!(!has_event(&fake_state(&api).await));
}

#[tokio::test]
async fn a_three_step_plan_is_rolled_back_newest_first() {
    let api = api();
    let owner = someone("alice");
    let message = someone("msg");
    common::seed_labels(&api, &message, &["INBOX", "UNREAD"]).await;
    store_google_token(&api, &owner).await;
    let plan = json!({"steps": [
        {"action_type": "gmail.label", "payload": {"message_id": message, "label_ids": ["Label_1"]}},
        {"action_type": "gmail.flag", "payload": {"message_id": message}},
        {"action_type": "gmail.mark_read", "payload": {"message_id": message}}
    ], "confidence": 0.9});
    let id = completed(&api, &owner, plan).await;
    assert_eq!(fake_state(&api).await["gmail"][&message], json!(["INBOX", "Label_1", "STARRED"]));
    let r = rollback(&api, &owner, &id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut labels: Vec<String> = serde_json::from_value(fake_state(&api).await["gmail"][&message].clone()).unwrap();
    labels.sort();
    assert_eq!(labels, vec!["INBOX", "UNREAD"]);
    let last = trail(&api, &owner, &id).await.last().unwrap().clone();
    assert_eq!(last["to"], "rolled_back");
    assert_eq!(last["detail"]["rolled_back_in_order"], json!([2, 1, 0]));
}

#[tokio::test]
async fn a_sent_email_makes_rollback_409_unless_partial() {
    let api = api();
    let owner = someone("alice");
    let path = format!("/hook/ok-rb-{}", someone("x"));
    // Step 0 sends an email (irreversible); step 1 calls a webhook with a compensating request.
    let plan = json!({"steps": [
        {"action_type": "send_email", "payload": {"to": ["bob@example.com"], "subject": "Sent for good", "text": "hi"}},
        {"action_type": "http_request", "payload": {"method": "POST", "url": format!("{}{path}", api.stack.fakes_url),
            "rollback": {"method": "DELETE", "url": format!("{}{path}/undo", api.stack.fakes_url)}}}
    ], "approver": APPROVER});
    let id = completed(&api, &owner, plan).await;
    let refused = rollback(&api, &owner, &id, json!({})).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.body["error"], "not_reversible");
    assert_eq!(
        refused.body["irreversible_steps"],
        json!([{"step": 0, "action_type": "send_email", "why": "irreversible"}])
    );
    assert_eq!(
        api.get(&format!("/actions/{id}"), &owner).await.body["status"],
        "completed",
        "a refused rollback changes nothing"
    );

    let partial = rollback(&api, &owner, &id, json!({"partial": true})).await;
    assert_eq!(partial.status, 200, "{}", partial.body);
    assert_eq!(partial.body["status"], "rolled_back");
    assert_eq!(partial.body["rolled_back_steps"], json!([1]));
    assert_eq!(partial.body["not_undone_steps"], json!([0]));
    let state = fake_state(&api).await;
    assert!(state["effects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"] == format!("{path}/undo") && e["method"] == "DELETE"));
}

#[tokio::test]
async fn a_plan_that_fails_for_good_is_compensated_when_the_policy_says_so() {
    let api = api();
    let owner = someone("alice");
    let message = someone("msg");
    common::seed_labels(&api, &message, &["INBOX", "UNREAD"]).await;
    store_google_token(&api, &owner).await;
    let hook = format!("{}/hook/bad-compensate-{}", api.stack.fakes_url, someone("x"));
    let plan = json!({"steps": [
        {"action_type": "gmail.label", "payload": {"message_id": message, "label_ids": ["Label_3"]}},
        {"action_type": "http_request", "payload": {"method": "POST", "url": hook}}
    ], "approver": APPROVER});
    let r = api.post("/actions", &owner, plan).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["action_id"].as_str().unwrap().to_owned();
    assert_eq!(api.post(&format!("/actions/{id}/approve"), APPROVER, json!({})).await.status, 200);

    let done = wait_for_status(&api, &owner, &id, &["rolled_back", "rollback_failed"], 60).await;
    assert_eq!(done["status"], "rolled_back", "{done}");
    assert_eq!(done["steps"][0]["state"], "rolled_back");
    assert_eq!(done["steps"][1]["state"], "failed");
    let mut labels: Vec<String> = serde_json::from_value(fake_state(&api).await["gmail"][&message].clone()).unwrap();
    labels.sort();
    assert_eq!(labels, vec!["INBOX", "UNREAD"], "the label step was undone");
    let events = trail(&api, &owner, &id).await;
    let moves: Vec<String> =
        events.iter().map(|e| format!("{}>{}", e["from"].as_str().unwrap_or("-"), e["to"].as_str().unwrap())).collect();
    assert_eq!(&moves[moves.len() - 3..], ["executing>failed", "failed>rolling_back", "rolling_back>rolled_back"]);
    let compensation = &events[events.len() - 2];
    assert_eq!(compensation["actor"], "executor");
    assert!(compensation["reason"].as_str().unwrap().starts_with("automatic compensation: step 1"), "{compensation}");
}

#[tokio::test]
async fn rollback_is_for_the_owner_of_finished_work() {
    let api = api();
    let owner = someone("alice");
    let id = approved_webhook(&api, &owner, &format!("/hook/ok-rbauth-{}", someone("x")), json!({})).await;
    wait_for_status(&api, &owner, &id, &["completed"], 60).await;
    assert_eq!(rollback(&api, &someone("mallory"), &id, json!({})).await.status, 404);
    assert_eq!(api.call("POST", &format!("/actions/{id}/rollback"), None, Some("{}".into()), &[]).await.status, 401);
    let bad = rollback(&api, &owner, &id, json!({"partial": "yes"})).await;
    assert_eq!((bad.status, bad.body["error"].as_str()), (400, Some("invalid_request")));
    let waiting =
        api.post("/actions", &owner, json!({"action_type": "gmail.spam", "payload": {"message_id": "m"}})).await;
    let not_done = rollback(&api, &owner, waiting.body["action_id"].as_str().unwrap(), json!({})).await;
    assert_eq!((not_done.status, not_done.body["error"].as_str()), (409, Some("invalid_state")));
    // A webhook without a compensating request cannot be undone either.
    assert_eq!(rollback(&api, &owner, &id, json!({})).await.body["error"], "not_reversible");
    // Direct invocation, as an operator would.
    let url = format!("http://127.0.0.1:{}/2015-03-31/functions/rollback/invocations", api.stack.invoke_port);
    let direct: Value =
        api.http.post(url).json(&json!({"action_id": id, "partial": true})).send().await.unwrap().json().await.unwrap();
    assert_eq!(direct["status"], "rolled_back", "{direct}");
}

#[tokio::test]
async fn stats_match_a_scripted_mix_of_outcomes() {
    let api = api();
    let owner = someone("stats");
    store_google_token(&api, &owner).await;
    let mut flags = Vec::new();
    for i in 0..2 {
        let message = format!("{owner}-m{i}");
        seed_message(&api, &message).await;
        flags.push(
            completed(
                &api,
                &owner,
                json!({"action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.9}),
            )
            .await,
        );
    }
    let ok = approved_webhook(&api, &owner, &format!("/hook/ok-stats-{}", someone("x")), json!({})).await;
    assert_eq!(wait_for_status(&api, &owner, &ok, &["completed"], 60).await["status"], "completed");
    let bad = approved_webhook(&api, &owner, &format!("/hook/bad-stats-{}", someone("x")), json!({})).await;
    assert_eq!(wait_for_status(&api, &owner, &bad, &["failed"], 60).await["status"], "failed");
    assert_eq!(rollback(&api, &owner, &flags[0], json!({})).await.status, 200);

    let stats = api.get("/stats", &owner).await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert_eq!(stats.body["scope"], "own");
    assert_eq!(stats.body["today"], json!({"auto_executed": 2, "approved_executed": 1, "failed": 1, "rolled_back": 1}));
    assert_eq!(
        stats.body["by_type"]["gmail.flag"],
        json!({"executed": 2, "succeeded": 2, "failed": 0, "rolled_back": 1})
    );
    assert_eq!(
        stats.body["by_type"]["http_request"],
        json!({"executed": 2, "succeeded": 1, "failed": 1, "rolled_back": 0})
    );
    assert_eq!(stats.body["success_rate"], 0.75);
    assert_eq!(stats.body["rollback_rate"], 0.333);
    assert_eq!(stats.body["recent"].as_array().unwrap().len(), 4);

    let everyone = api.get("/stats", &format!("{}:admin", someone("root"))).await;
    assert_eq!(everyone.body["scope"], "all");
    assert!(everyone.body["today"]["auto_executed"].as_u64().unwrap() >= 2);
    assert_eq!(api.get("/stats", &someone("nobody")).await.body["today"]["auto_executed"], 0);
}

#[tokio::test]
async fn a_plan_cancelled_half_way_can_still_undo_the_steps_it_ran() {
    let api = api();
    let owner = someone("alice");
    let message = someone("msg");
    common::seed_labels(&api, &message, &["INBOX"]).await;
    store_google_token(&api, &owner).await;
    let plan = json!({"steps": [
        {"action_type": "gmail.label", "payload": {"message_id": message, "label_ids": ["Label_7"]}},
        {"wait_for": "PT1H"},
        {"action_type": "gmail.archive", "payload": {"message_id": message}}
    ], "confidence": 0.95});
    let r = api.post("/actions", &owner, plan).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["action_id"].as_str().unwrap().to_owned();
    wait_for_status(&api, &owner, &id, &["waiting"], 60).await;
    let cancelled = api.post(&format!("/actions/{id}/cancel"), &owner, json!({})).await;
    assert_eq!((cancelled.status, cancelled.body["status"].as_str()), (200, Some("cancelled")), "{}", cancelled.body);
    // The label is still there: the cancel stopped the plan, it did not undo step 0.
    let labels = || async { fake_state(&api).await["gmail"][&message].clone() };
    assert!(labels().await.as_array().unwrap().contains(&json!("Label_7")));
    let undone = rollback(&api, &owner, &id, json!({})).await;
    assert_eq!((undone.status, undone.body["status"].as_str()), (200, Some("rolled_back")), "{}", undone.body);
    assert_eq!(labels().await, json!(["INBOX"]));

    // A cancelled action that never ran anything has nothing to undo.
    let later = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let idle = api
        .post("/actions", &owner, json!({"action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.95, "scheduled_for": later}))
        .await;
    let idle_id = idle.body["action_id"].as_str().unwrap().to_owned();
    assert_eq!(api.post(&format!("/actions/{idle_id}/cancel"), &owner, json!({})).await.status, 200);
    let refused = rollback(&api, &owner, &idle_id, json!({})).await;
    assert_eq!((refused.status, refused.body["error"].as_str()), (409, Some("invalid_state")), "{}", refused.body);
}

#[tokio::test]
async fn a_plan_the_sweep_fails_after_a_crash_is_compensated_like_any_failed_plan() {
    use actiongate::domain::action::{StepKind, StepState};
    use actiongate::domain::{Status, Tier, UserId};
    let api = api();
    let store = common::store_of(&api).await;
    let owner = someone("alice");
    let undo = format!("/hook/ok-undo-{}", someone("u"));
    let now = chrono::Utc::now();
    // Step 0 (a webhook with a compensating request) ran; the executor died during step 1, an
    // email, whose outcome is then unknown: the sweep fails the plan, and this policy
    // compensates failed plans.
    let webhook = json!({"method": "POST", "url": format!("{}/hook/ok-done-{}", api.stack.fakes_url, someone("d")),
        "rollback": {"method": "POST", "url": format!("{}{undo}", api.stack.fakes_url)}});
    let email = json!({"to": ["bob@example.com"], "subject": "s", "text": "t"});
    let mut action = actiongate::domain::Action::new(
        UserId::parse(&owner).unwrap(),
        "plan",
        Value::Null,
        vec![
            StepKind::Action { action_type: "http_request".into(), payload: webhook },
            StepKind::Action { action_type: "send_email".into(), payload: email },
        ],
        now,
    );
    action.status = Status::Executing;
    (action.tier, action.max_attempts, action.attempts) = (Some(Tier::Approval), 3, 2);
    (action.decided_by, action.decided_at) = (Some(APPROVER.into()), Some(now));
    action.steps[0].state = StepState::Completed;
    action.steps[0].result = Some(json!({"status": 200}));
    action.steps[1].state = StepState::Running;
    action.steps[1].attempts = 1;
    action.lease_expires_at = Some(now - chrono::Duration::minutes(1));
    let event = actiongate_local::fixtures::event(&action, 1, None, Status::Executing);
    store.create_action(&action, &[event], None, &[], &[], None, now).await.unwrap();
    let id = action.action_id.to_string();
    let done = wait_for_status(&api, &owner, &id, &["rolled_back", "rollback_failed"], 60).await;
    assert_eq!(done["status"], "rolled_back", "{done}");
    assert_eq!(common::deliveries_to(&fake_state(&api).await, &undo), 1, "step 0 undone once");
    let moves: Vec<String> = trail(&api, &owner, &id)
        .await
        .iter()
        .filter(|e| e["from"] != e["to"])
        .map(|e| e["to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(moves, ["executing", "failed", "rolling_back", "rolled_back"]);
    // The email whose outcome is unknown is not hidden behind "everything was undone".
    let last = trail(&api, &owner, &id).await.last().unwrap().clone();
    assert_eq!(last["detail"]["needs_human"], true, "{last}");
    assert_eq!(last["detail"]["not_undone"][0]["why"], "outcome_unknown", "{last}");
}
