//! End-to-end: the intake function compiled and run by `cargo lambda watch`, reached through
//! the local gateway over HTTP and through `cargo lambda invoke` with the `events/` fixtures.

mod common;

use actiongate_local::stack::shared;
use common::{api, futures_like_join, someone};
use serde_json::{json, Value};
use std::process::Command;

fn email_action() -> Value {
    json!({"action_type": "send_email", "payload": {"to": ["bob@example.com"], "subject": "Hello", "text": "Hi Bob"}, "risk_score": 20, "confidence": 0.8})
}

fn flag_action(message: &str) -> Value {
    json!({"action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.95})
}

#[tokio::test]
async fn health_is_ready_and_outbox_is_served() {
    let api = api();
    let health = api.call("GET", "/health", None, None, &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    let outbox = api.call("GET", "/_local/outbox", None, None, &[]).await;
    assert_eq!(outbox.status, 200);
    assert!(outbox.body["messages"].is_array());
}

#[tokio::test]
async fn tier_two_action_awaits_approval_with_expiry_and_trail() {
    let api = api();
    let alice = someone("alice");
    let created = api.post("/actions", &alice, email_action()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "awaiting_approval");
    assert_eq!(created.body["tier"], 2);
    assert_eq!(created.body["requires_approval"], true);
    assert!(created.body["reasons"].as_array().unwrap().contains(&json!("needs_approval")));
    let expires = chrono::DateTime::parse_from_rfc3339(created.body["approval_expires_at"].as_str().unwrap()).unwrap();
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!((expires.timestamp() - in_an_hour.timestamp()).abs() < 60, "expiry is one hour away");

    let id = created.body["action_id"].as_str().unwrap();
    let got = api.get(&format!("/actions/{id}"), &alice).await;
    assert_eq!(got.status, 200);
    for field in [
        "action_id",
        "user_id",
        "action_type",
        "payload",
        "status",
        "tier",
        "risk_score",
        "confidence",
        "steps",
        "attempts",
        "created_at",
        "updated_at",
    ] {
        assert!(got.body.get(field).is_some(), "GET /actions/{{id}} lacks {field}");
    }
    assert_eq!(got.body["user_id"], alice.as_str());
    assert_eq!(got.body["risk_score"], 20);

    let audit = api.get(&format!("/actions/{id}/audit"), &alice).await;
    assert_eq!(audit.status, 200);
    let events = audit.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["from"], Value::Null);
    assert_eq!(events[0]["to"], "received");
    assert_eq!(events[0]["actor"], alice.as_str());
    assert_eq!(events[1]["from"], "received");
    assert_eq!(events[1]["to"], "awaiting_approval");
    assert!(events[0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[0]["source_ip"], "127.0.0.1");
}

#[tokio::test]
async fn tier_one_action_runs_automatically_against_gmail() {
    let api = api();
    let alice = someone("alice");
    let message = someone("msg");
    common::seed_labels(&api, &message, &["INBOX", "UNREAD"]).await;
    let stored = common::store_google_token(&api, &alice).await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert!(!stored.body.to_string().contains("ya29"), "the token is never echoed");

    let created = api.post("/actions", &alice, flag_action(&message)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "queued");
    assert_eq!(created.body["tier"], 1);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    let done = common::wait_for_status(&api, &alice, &id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    let state = common::fake_state(&api).await;
    assert_eq!(state["gmail"][&message], json!(["INBOX", "UNREAD", "STARRED"]));
    let trail = api.get(&format!("/actions/{id}/audit"), &alice).await;
    let moves: Vec<String> = trail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}>{}", e["from"].as_str().unwrap_or("-"), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(moves, vec!["->received", "received>queued", "queued>executing", "executing>completed"]);
}

#[tokio::test]
async fn scheduled_tier_one_waits_pending_and_tier_three_is_manual() {
    let api = api();
    let alice = someone("alice");
    let later = (chrono::Utc::now() + chrono::Duration::hours(3)).to_rfc3339();
    let mut body = flag_action("m-later");
    body["scheduled_for"] = json!(later);
    let pending = api.post("/actions", &alice, body).await;
    assert_eq!(pending.body["status"], "pending", "{}", pending.body);

    let manual =
        api.post("/actions", &alice, json!({"action_type": "gmail.delete", "payload": {"message_id": "m9"}})).await;
    assert_eq!(manual.status, 201);
    assert_eq!(manual.body["status"], "manual");
    assert_eq!(manual.body["tier"], 3);
    let id = manual.body["action_id"].as_str().unwrap();
    let cancel = api.post(&format!("/actions/{id}/cancel"), &alice, json!({})).await;
    assert_eq!(cancel.status, 409, "a manual action is closed with done or dismiss");
    let done = api.post(&format!("/actions/{id}/done"), &alice, json!({"reason": "deleted it myself"})).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body["status"], "done_manually");
}

#[tokio::test]
async fn low_confidence_and_high_risk_need_approval() {
    let api = api();
    let alice = someone("alice");
    let low = api
        .post(
            "/actions",
            &alice,
            json!({"action_type": "gmail.flag", "payload": {"message_id": "m"}, "confidence": 0.5}),
        )
        .await;
    assert_eq!(low.body["tier"], 2);
    assert!(low.body["reasons"].as_array().unwrap().contains(&json!("low_confidence")));
    let risky = api.post("/actions", &alice, json!({"action_type": "gmail.archive", "payload": {"message_id": "m"}, "confidence": 0.9, "risk_score": 75})).await;
    assert_eq!(risky.body["tier"], 2);
    assert!(risky.body["reasons"].as_array().unwrap().contains(&json!("risk_above_threshold")));
}

#[tokio::test]
async fn payment_is_blocked_and_purchase_needs_kyc_until_admin_sets_it() {
    let api = api();
    let alice = someone("alice");
    let pay = api
        .post(
            "/actions",
            &alice,
            json!({"action_type": "make_payment", "payload": {"amount": 10, "currency": "USD", "recipient": "acme"}}),
        )
        .await;
    assert_eq!(pay.status, 403);
    assert_eq!(pay.body["error"], "blocked");
    assert_eq!(pay.body["reasons"], json!(["blocked"]));
    // The attempt is recorded: its audit trail shows the block.
    let id = pay.body["action_id"].as_str().unwrap();
    let got = api.get(&format!("/actions/{id}"), &alice).await;
    assert_eq!(got.body["status"], "blocked");

    let purchase =
        json!({"action_type": "make_purchase", "payload": {"item": "laptop", "amount": 999.5, "currency": "EUR"}});
    let denied = api.post("/actions", &alice, purchase.clone()).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body["error"], "kyc_required");

    let not_admin = common::set_kyc(&api, &alice, &alice, true).await;
    assert_eq!(not_admin.status, 403);
    let admin = format!("{}:admin", someone("root"));
    let set = common::set_kyc(&api, &admin, &alice, true).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["kyc_verified"], true);
    let allowed = api.post("/actions", &alice, purchase).await;
    assert_eq!(allowed.status, 201, "{}", allowed.body);
    assert_eq!(allowed.body["status"], "awaiting_approval");
}

#[tokio::test]
async fn another_users_action_is_not_found() {
    let api = api();
    let alice = someone("alice");
    let bob = someone("bob");
    let created = api.post("/actions", &alice, email_action()).await;
    let id = created.body["action_id"].as_str().unwrap();
    for path in [format!("/actions/{id}"), format!("/actions/{id}/audit")] {
        let r = api.get(&path, &bob).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.body["error"], "not_found");
    }
    let cancel = api.post(&format!("/actions/{id}/cancel"), &bob, json!({})).await;
    assert_eq!(cancel.status, 404);
    let listing = api.get("/actions", &bob).await;
    assert_eq!(listing.body["actions"], json!([]));
    // The designated approver and an admin may read it.
    let approver = api.get(&format!("/actions/{id}"), "approvals@example.com").await;
    assert_eq!(approver.status, 200);
    let admin = api.get(&format!("/actions/{id}"), &format!("{}:admin", someone("root"))).await;
    assert_eq!(admin.status, 200);
}

#[tokio::test]
async fn cancel_moves_waiting_work_and_refuses_twice() {
    let api = api();
    let alice = someone("alice");
    let created = api.post("/actions", &alice, email_action()).await;
    let id = created.body["action_id"].as_str().unwrap();
    let cancelled = api.post(&format!("/actions/{id}/cancel"), &alice, json!({"reason": "changed my mind"})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    let again = api.post(&format!("/actions/{id}/cancel"), &alice, json!({})).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"], "invalid_state");
    assert_eq!(again.body["status"], "cancelled");
    let audit = api.get(&format!("/actions/{id}/audit"), &alice).await;
    let last = audit.body["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["from"].as_str(), last["to"].as_str(), last["reason"].as_str()),
        (Some("awaiting_approval"), Some("cancelled"), Some("changed my mind"))
    );
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters_by_status() {
    let api = api();
    let alice = someone("alice");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = api.post("/actions", &alice, email_action()).await;
        ids.push(r.body["action_id"].as_str().unwrap().to_owned());
    }
    let manual =
        api.post("/actions", &alice, json!({"action_type": "gmail.delete", "payload": {"message_id": "mx"}})).await;
    let page1 = api.get("/actions?limit=2", &alice).await;
    assert_eq!(page1.status, 200);
    let got: Vec<&str> =
        page1.body["actions"].as_array().unwrap().iter().map(|a| a["action_id"].as_str().unwrap()).collect();
    assert_eq!(got, vec![manual.body["action_id"].as_str().unwrap(), ids[2].as_str()]);
    let cursor = page1.body["next_cursor"].as_str().unwrap();
    let page2 = api.get(&format!("/actions?limit=2&cursor={cursor}"), &alice).await;
    let got: Vec<&str> =
        page2.body["actions"].as_array().unwrap().iter().map(|a| a["action_id"].as_str().unwrap()).collect();
    assert_eq!(got, vec![ids[1].as_str(), ids[0].as_str()]);
    let queued = api.get("/actions?status=awaiting_approval", &alice).await;
    assert_eq!(queued.body["actions"].as_array().unwrap().len(), 3);
    let manual_only = api.get("/actions?status=manual", &alice).await;
    assert_eq!(manual_only.body["actions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn idempotency_key_replays_and_conflicts() {
    let api = api();
    let alice = someone("alice");
    let key = [("idempotency-key", "order-77")];
    let first = api.call("POST", "/actions", Some(&alice), Some(email_action().to_string()), &key).await;
    assert_eq!(first.status, 201);
    let replay = api.call("POST", "/actions", Some(&alice), Some(email_action().to_string()), &key).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["action_id"], first.body["action_id"]);
    assert_eq!(replay.body["status"], first.body["status"]);
    let mut other = email_action();
    other["payload"]["subject"] = json!("Different");
    let conflict = api.call("POST", "/actions", Some(&alice), Some(other.to_string()), &key).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.body["error"], "idempotency_conflict");
    // The same key is a different key for another user.
    let bob = someone("bob");
    let bobs = api.call("POST", "/actions", Some(&bob), Some(email_action().to_string()), &key).await;
    assert_eq!(bobs.status, 201);
    let listing = api.get("/actions", &alice).await;
    assert_eq!(listing.body["actions"].as_array().unwrap().len(), 1, "the replay stored nothing new");
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_action() {
    let api = api();
    let alice = someone("alice");
    let body = flag_action("m-race").to_string();
    let calls = (0..6)
        .map(|_| api.call("POST", "/actions", Some(&alice), Some(body.clone()), &[("idempotency-key", "race-1")]));
    let replies = futures_like_join(calls).await;
    let ids: std::collections::HashSet<_> =
        replies.iter().map(|r| r.body["action_id"].as_str().unwrap_or("none").to_owned()).collect();
    assert_eq!(ids.len(), 1, "{:?}", replies.iter().map(|r| (r.status, r.body.clone())).collect::<Vec<_>>());
    assert_eq!(replies.iter().filter(|r| r.status == 201).count(), 1);
    assert!(replies.iter().all(|r| r.status == 201 || r.status == 200));
}

#[tokio::test]
async fn email_rate_limit_answers_429_with_retry_after() {
    let api = api();
    let alice = someone("alice");
    for i in 0..50 {
        let r = api.post("/actions", &alice, email_action()).await;
        assert_eq!(r.status, 201, "request {i}: {}", r.body);
    }
    let limited = api.post("/actions", &alice, email_action()).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.body["error"], "rate_limited");
    assert_eq!(limited.body["window"], "hour");
    let retry: i64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    let status = api.get("/rate-limits/send_email", &alice).await;
    assert_eq!(status.status, 200);
    let limits = status.body["limits"].as_array().unwrap();
    let hour = limits.iter().find(|l| l["window"] == "hour").unwrap();
    assert_eq!((hour["limit"].as_u64(), hour["used"].as_u64()), (Some(50), Some(50)));
    let day = limits.iter().find(|l| l["window"] == "day").unwrap();
    assert_eq!((day["limit"].as_u64(), day["used"].as_u64()), (Some(500), Some(50)));
    // Other types and other users are not affected.
    assert_eq!(api.post("/actions", &alice, flag_action("m")).await.status, 201);
    assert_eq!(api.post("/actions", &someone("bob"), email_action()).await.status, 201);
}

#[tokio::test]
async fn dry_run_previews_and_stores_nothing() {
    let api = api();
    let alice = someone("alice");
    let mut body =
        json!({"action_type": "gmail.archive", "payload": {"message_id": "m1"}, "risk_score": 80, "confidence": 0.9});
    body["dry_run"] = json!(true);
    let r = api.post("/actions", &alice, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["dry_run"], true);
    assert_eq!(r.body["tier"], 2);
    assert_eq!(r.body["status"], "awaiting_approval");
    assert!(r.body["reasons"].as_array().unwrap().contains(&json!("risk_above_threshold")));
    assert_eq!(r.body["preview"], json!(["archive Gmail message m1"]));
    let blocked = api.post("/actions", &alice, json!({"action_type": "make_payment", "payload": {"amount": 1, "currency": "USD", "recipient": "x"}, "dry_run": true})).await;
    assert_eq!(blocked.status, 200);
    assert_eq!(blocked.body["status"], "blocked");
    assert_eq!(api.get("/actions", &alice).await.body["actions"], json!([]));
    assert_eq!(api.get("/rate-limits/send_email", &alice).await.body["limits"][0]["used"], 0);
}

#[tokio::test]
async fn plan_with_wait_steps_is_accepted_as_one_action() {
    let api = api();
    let alice = someone("alice");
    let plan = json!({"steps": [
        {"action_type": "gmail.label", "payload": {"message_id": "m1", "label_ids": ["Label_1"]}},
        {"wait_for": "PT2H"},
        {"action_type": "send_email", "payload": {"to": ["c@example.com"], "subject": "Follow-up", "text": "Any news?"}}
    ], "confidence": 0.9});
    let r = api.post("/actions", &alice, plan).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["tier"], 2, "the plan takes its highest step tier");
    let got = api.get(&format!("/actions/{}", r.body["action_id"].as_str().unwrap()), &alice).await;
    assert_eq!(got.body["action_type"], "plan");
    let steps = got.body["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[1]["kind"], "wait_for");
    assert_eq!(steps[1]["wait_for"], "PT2H");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_naming_the_field() {
    let api = api();
    let alice = someone("alice");
    let big = "x".repeat(70 * 1024);
    // (method, path, body, status, error code, field)
    type Case<'a> = (&'a str, &'a str, Option<String>, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("POST", "/actions", Some("{not json".into()), 400, "invalid_request", Some("$")),
        ("POST", "/actions", Some("".into()), 400, "invalid_request", Some("$")),
        ("POST", "/actions", Some("[1,2]".into()), 400, "invalid_request", Some("$")),
        ("POST", "/actions", Some(json!({"action_type": 7, "payload": {}}).to_string()), 400, "invalid_request", Some("action_type")),
        ("POST", "/actions", Some(json!({"action_type": "teleport", "payload": {}}).to_string()), 400, "invalid_request", Some("action_type")),
        ("POST", "/actions", Some(json!({"action_type": "send_email"}).to_string()), 400, "invalid_request", Some("payload")),
        ("POST", "/actions", Some(json!({"action_type": "send_email", "payload": {"to": ["b@example.com"], "text": "x"}}).to_string()), 400, "invalid_request", Some("payload.subject")),
        ("POST", "/actions", Some(json!({"action_type": "send_email", "payload": {"to": ["b@example.com"], "subject": "s", "text": big}}).to_string()), 413, "payload_too_large", Some("payload")),
        ("POST", "/actions", Some(json!({"action_type": "gmail.flag", "payload": {"message_id": "m"}, "risk_score": 150}).to_string()), 400, "invalid_request", Some("risk_score")),
        ("POST", "/actions", Some(json!({"action_type": "gmail.flag", "payload": {"message_id": "m"}, "confidence": -0.1}).to_string()), 400, "invalid_request", Some("confidence")),
        ("POST", "/actions", Some(json!({"action_type": "gmail.flag", "payload": {"message_id": "m"}, "scheduled_for": "next tuesday"}).to_string()), 400, "invalid_request", Some("scheduled_for")),
        ("POST", "/actions", Some(json!({"action_type": "calendar.create_event", "payload": {"summary": "x", "start": "2026-13-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"}}).to_string()), 400, "invalid_request", Some("payload.start")),
        ("POST", "/actions", Some(json!({"steps": [{"action_type": "gmail.flag", "payload": {"message_id": "m"}}, {"wait_for": "forever"}]}).to_string()), 400, "invalid_request", Some("steps[1].wait_for")),
        ("GET", "/actions/not-an-id", None, 404, "not_found", None),
        ("GET", "/actions/01a1feb2-0000-7000-8000-000000000000", None, 404, "not_found", None),
        ("GET", "/actions/01a1feb2-0000-7000-8000-000000000000/audit", None, 404, "not_found", None),
        ("POST", "/actions/01a1feb2-0000-7000-8000-000000000000/cancel", None, 404, "not_found", None),
        ("GET", "/actions?cursor=bm90LWEtY3Vyc29y", None, 400, "invalid_request", Some("cursor")),
        ("GET", "/actions?limit=0", None, 400, "invalid_request", Some("limit")),
        ("GET", "/actions?limit=ten", None, 400, "invalid_request", Some("limit")),
        ("GET", "/actions?status=done", None, 400, "invalid_request", Some("status")),
        ("GET", "/rate-limits/teleport", None, 404, "not_found", None),
    ];
    for (method, path, body, status, code, field) in cases {
        let r = api.call(method, path, Some(&alice), body.clone(), &[("content-type", "application/json")]).await;
        assert_eq!(
            r.status,
            status,
            "{method} {path} {:?}: {}",
            body.as_deref().map(|b| &b[..b.len().min(80)]),
            r.body
        );
        assert_eq!(r.body["error"], code, "{method} {path}: {}", r.body);
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(f) = field {
            assert_eq!(r.body["field"], f, "{method} {path}: {}", r.body);
        }
    }
    let bad_key = api
        .call("POST", "/actions", Some(&alice), Some(flag_action("m").to_string()), &[("idempotency-key", "has space")])
        .await;
    assert_eq!((bad_key.status, bad_key.body["field"].as_str()), (400, Some("Idempotency-Key")));
}

#[tokio::test]
async fn missing_or_malformed_identity_is_401() {
    let api = api();
    let none = api.call("GET", "/actions", None, None, &[]).await;
    assert_eq!(none.status, 401);
    for header in ["Bearer", "Bearer dev:", "Basic abc", "Bearer dev:alice:superuser", "Bearer alice"] {
        let r = api.call("GET", "/actions", None, None, &[("authorization", header)]).await;
        assert_eq!(r.status, 401, "{header}");
    }
    let unknown_route = api.get("/nothing-here", "alice").await;
    assert_eq!(unknown_route.status, 404);
}

/// `cargo lambda invoke` with the sample events in `events/`.
#[tokio::test]
async fn cargo_lambda_invoke_with_sample_events() {
    let stack = shared();
    let root = actiongate_local::workspace_root();
    let invoke = |file: &str| -> Value {
        let out = Command::new(actiongate_local::venv_bin("cargo-lambda"))
            .current_dir(&root)
            .args([
                "lambda",
                "invoke",
                "intake",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &stack.invoke_port.to_string(),
                "--data-file",
            ])
            .arg(root.join("events").join(file))
            .output()
            .expect("cargo lambda invoke runs");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        let response: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{file}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        json!({"status": response["statusCode"], "body": body})
    };
    let email = invoke("apigw-create-tier2-email.json");
    assert_eq!(email["status"], 201, "{email}");
    assert_eq!(email["body"]["status"], "awaiting_approval");
    let flag = invoke("apigw-create-tier1-flag.json");
    assert_eq!(flag["body"]["status"], "queued");
    let plan = invoke("apigw-create-plan.json");
    assert_eq!(plan["status"], 201, "{plan}");
    let dry = invoke("apigw-create-dry-run.json");
    assert_eq!((dry["status"].as_u64(), dry["body"]["dry_run"].as_bool()), (Some(200), Some(true)));
    let malformed = invoke("apigw-create-malformed-json.json");
    assert_eq!(
        (malformed["status"].as_u64(), malformed["body"]["error"].as_str()),
        (Some(400), Some("invalid_request"))
    );
    let anonymous = invoke("apigw-create-unauthenticated.json");
    assert_eq!(anonymous["status"], 401);
    let list = invoke("apigw-list-actions.json");
    assert_eq!(list["status"], 200);
    assert!(list["body"]["actions"].as_array().unwrap().len() >= 3);
    let unknown = invoke("apigw-get-unknown-action.json");
    assert_eq!(unknown["status"], 404);
    let limits = invoke("apigw-rate-limits.json");
    assert_eq!(limits["status"], 200);
}

/// `GET /actions/{id}?wait=` answers as soon as the action changes (here: approved), and a
/// wait outside 0–25 s is refused naming the field.
#[tokio::test]
async fn a_read_can_wait_for_the_next_change() {
    let api = common::api();
    let owner = someone("waiter");
    let body = json!({"action_type": "send_email", "approver": common::APPROVER,
                      "payload": {"to": ["bob@example.com"], "subject": "wait", "text": "hi"}});
    let created = api.post("/actions", &owner, body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    let too_long = api.get(&format!("/actions/{id}?wait=26"), &owner).await;
    assert_eq!((too_long.status, too_long.body["field"].as_str()), (400, Some("wait")), "{}", too_long.body);
    let unchanged = std::time::Instant::now();
    let same = api.get(&format!("/actions/{id}?wait=1"), &owner).await;
    assert_eq!(same.body["status"], "awaiting_approval");
    assert!(unchanged.elapsed() >= std::time::Duration::from_secs(1), "it waited the second");
    let started = std::time::Instant::now();
    let wait_path = format!("/actions/{id}?wait=20");
    let (waited, approved) = tokio::join!(api.get(&wait_path, &owner), async {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        api.post(&format!("/actions/{id}/approve"), common::APPROVER, json!({})).await
    });
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(waited.status, 200);
    assert_ne!(waited.body["status"], "awaiting_approval", "{}", waited.body);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "answered at the change, not after 20 s");
}

/// The gateway answers what API Gateway would: a non-ASCII `Idempotency-Key` reaches the
/// function and is refused with 400 (never a dropped connection, never silently ignored); a
/// raw path byte outside ASCII and oversized headers get a 4xx.
#[tokio::test]
async fn malformed_requests_get_a_4xx_never_a_dropped_connection() {
    let api = common::api();
    let owner = someone("keyed");
    let url = format!("{}/actions", api.stack.gateway_url);
    let body = json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "confidence": 0.95});
    let r = api
        .http
        .post(&url)
        .header("authorization", format!("Bearer dev:{owner}"))
        .header("idempotency-key", reqwest::header::HeaderValue::from_bytes("clé-1".as_bytes()).unwrap())
        .json(&body)
        .send()
        .await
        .expect("answered, not dropped");
    let status = r.status().as_u16();
    let answer: Value = r.json().await.unwrap_or_default();
    assert_eq!((status, answer["field"].as_str()), (400, Some("Idempotency-Key")), "{answer}");
    // Raw bytes: a path byte outside ASCII, and a head larger than the gateway takes.
    let addr = api.stack.gateway_url.trim_start_matches("http://").to_owned();
    let raw = |request: Vec<u8>| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.write_all(&request).await.unwrap();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let mut bad_path = b"GET /actions/\xff\xfe HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec();
    let answer = raw(std::mem::take(&mut bad_path)).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    let huge =
        format!("GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n", "a".repeat(200_000));
    let answer = raw(huge.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
}
