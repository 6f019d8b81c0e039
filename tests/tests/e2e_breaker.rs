//! The circuit breaker on automatic execution, on a stack of its own (an open breaker would
//! hold every other suite's tier-1 work).

mod common;

use common::{approved_webhook, fake_state, someone, trail, wait_for_status};
use serde_json::{json, Value};

#[tokio::test]
async fn failing_automatic_work_opens_the_breaker_until_an_admin_resets_it() {
    // Roomy limits, but the deployed breaker settings.
    let policy = common::policy_file("e2e-breaker", &[common::ROOMY_AUTO_LIMITS]);
    let api = common::Api {
        stack: actiongate_local::stack::shared_with(&[("POLICY_FILE", &policy)]),
        http: reqwest::Client::new(),
    };
    let owner = someone("alice");
    let admin = format!("{}:admin", someone("root"));
    common::store_google_token(&api, &owner).await;
    let flag =
        |message: &str| json!({"action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.9});

    // Three tier-1 actions on messages that do not exist: three permanent failures in a row.
    for i in 0..3 {
        let r = api.post("/actions", &owner, flag(&format!("missing-{i}"))).await;
        let id = r.body["action_id"].as_str().unwrap().to_owned();
        let done = wait_for_status(&api, &owner, &id, &["failed"], 30).await;
        assert_eq!(done["error"]["code"], "http_404");
    }
    let status = api.call("GET", "/admin/circuit-breaker", Some(&admin), None, &[]).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["state"], "open", "{}", status.body);
    assert!(status.body["reason"].as_str().unwrap().contains("3 automatic executions failed in a row"));
    assert_eq!(status.body["failure_ratio"], 1.0);
    assert!(status.body["opened_at"].as_str().is_some());
    assert_eq!(api.call("GET", "/admin/circuit-breaker", Some(&owner), None, &[]).await.status, 403);

    // The admin was told, once.
    let outbox = api.call("GET", "/_local/outbox", None, None, &[]).await;
    let alerts = outbox.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subject"].as_str().unwrap().contains("circuit breaker open"))
        .count();
    assert_eq!(alerts, 1);

    // Tier-1 work now waits…
    let message = someone("msg");
    common::seed_labels(&api, &message, &["INBOX"]).await;
    let held = api.post("/actions", &owner, flag(&message)).await;
    assert_eq!(held.body["status"], "pending", "{}", held.body);
    let held_id = held.body["action_id"].as_str().unwrap().to_owned();
    let action = api.get(&format!("/actions/{held_id}"), &owner).await.body;
    assert!(action["hold_reason"].as_str().unwrap().starts_with("breaker_open:"), "{action}");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        api.get(&format!("/actions/{held_id}"), &owner).await.body["status"],
        "pending",
        "the sweep must not start it while open"
    );

    // …while approved tier-2 work still runs.
    let path = format!("/hook/ok-breaker-{}", someone("x"));
    let approved = approved_webhook(&api, &owner, &path, json!({})).await;
    assert_eq!(wait_for_status(&api, &owner, &approved, &["completed", "failed"], 30).await["status"], "completed");

    // An admin resets it; the sweep then starts the held work.
    let reset = api.call("POST", "/admin/circuit-breaker/reset", Some(&admin), None, &[]).await;
    assert_eq!((reset.status, reset.body["state"].as_str()), (200, Some("closed")), "{}", reset.body);
    let done = wait_for_status(&api, &owner, &held_id, &["completed", "failed"], 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(fake_state(&api).await["gmail"][&message], json!(["INBOX", "STARRED"]));
    let started = trail(&api, &owner, &held_id)
        .await
        .into_iter()
        .find(|e| e["from"] == "pending" && e["to"] == "queued")
        .unwrap();
    assert_eq!(started["actor"], "sweep");

    // Every change of the breaker is in its trail.
    let status = api.call("GET", "/admin/circuit-breaker", Some(&admin), None, &[]).await;
    let changes: Vec<(String, String, String)> = status.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e: &Value| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let admin_user = admin.trim_end_matches(":admin").to_owned();
    assert_eq!(
        changes,
        vec![("closed".into(), "open".into(), "executor".into()), ("open".into(), "closed".into(), admin_user)]
    );
}
