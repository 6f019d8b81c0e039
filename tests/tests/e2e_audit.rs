//! Audit completeness: every path through the system (intake, approval, executor, sweep,
//! rollback, admin) leaves a trail with exactly one event per transition, in order, chained
//! (each event starts where the previous one ended), legal, and never rewritten afterwards.

mod common;

use actiongate::domain::Status;
use common::{set_kyc, someone, store_google_token, trail, wait_for_status, Api, APPROVER};
use serde_json::{json, Value};

const SHORT_EXPIRY: (&str, &str) =
    ("[types.\"gmail.spam\"]\ntier = 2", "[types.\"gmail.spam\"]\ntier = 2\napproval_expiry = \"PT3S\"");

fn api() -> Api {
    common::api_with_policy(&[SHORT_EXPIRY], &[])
}

/// One walk through the system: how it starts, what finishes it, and the exact trail expected.
struct Walk {
    name: &'static str,
    id: String,
    owner: String,
    expected: Vec<&'static str>,
    /// The trail as it was right after creation: it must stay a prefix, unchanged.
    early: Vec<Value>,
}

async fn create(api: &Api, owner: &str, body: Value) -> (String, Vec<Value>) {
    let r = api.post("/actions", owner, body).await;
    assert!(r.status == 201 || r.status == 403, "{} {}", r.status, r.body);
    let id = r.body["action_id"].as_str().unwrap_or_else(|| panic!("no action id: {}", r.body)).to_owned();
    let early = trail(api, owner, &id).await;
    (id, early)
}

/// Checks what every trail must satisfy, whatever the path.
fn check_invariants(walk: &Walk, events: &[Value], status: &str) {
    let name = walk.name;
    assert!(!events.is_empty(), "{name}: empty trail");
    let mut previous: Option<Status> = None;
    let mut previous_at = String::new();
    let mut previous_seq = 0;
    for (i, e) in events.iter().enumerate() {
        // `seq` is the action's version the event produced: increasing, with gaps where a
        // write was not a transition (rollback progress, a reminder). The chain below is what
        // proves nothing is missing.
        let seq = e["seq"].as_u64().unwrap();
        assert!(seq > previous_seq, "{name}: sequence numbers increase: {e}");
        previous_seq = seq;
        let at = e["at"].as_str().unwrap().to_owned();
        assert!(at >= previous_at, "{name}: event {i} is older than the one before it");
        assert!(at.ends_with('Z'), "{name}: times are UTC");
        previous_at = at;
        assert!(e["actor"].as_str().is_some_and(|a| !a.is_empty()), "{name}: event {i} names no actor");
        assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()), "{name}: event {i} gives no reason");
        let from: Option<Status> = serde_json::from_value(e["from"].clone()).unwrap();
        let to: Status = serde_json::from_value(e["to"].clone()).unwrap();
        assert_eq!(from, previous, "{name}: event {i} does not start where the previous one ended");
        match from {
            None => assert_eq!(to, Status::Received, "{name}: a trail starts at received"),
            // A note on waiting work (a reminder with a new link, why it is still held).
            Some(from) if from == to => {
                assert!(matches!(to, Status::Pending | Status::AwaitingApproval), "{name}: a note on {to}")
            }
            Some(from) => assert!(from.can_move_to(to), "{name}: illegal move {from} → {to}"),
        }
        previous = Some(to);
    }
    assert_eq!(events.last().unwrap()["to"], status, "{name}: the trail ends in the action's state");
    assert!(events.len() >= walk.early.len() && events[..walk.early.len()] == walk.early[..], "{name}: rewritten");
}

#[tokio::test]
async fn every_path_leaves_a_complete_ordered_and_immutable_trail() {
    let api = api();
    let owner = someone("audited");
    let hooks = api.stack.fakes_url.clone();
    let message = someone("msg");
    common::seed_message(&api, &message).await;
    store_google_token(&api, &owner).await;
    let mut walks = Vec::new();
    let mut walk = |name, (id, early): (String, Vec<Value>), expected: Vec<&'static str>| {
        walks.push(Walk { name, id, owner: owner.clone(), expected, early });
    };

    // intake → executor → rollback
    let auto = create(
        &api,
        &owner,
        json!({"action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.9}),
    )
    .await;
    walk(
        "auto then rolled back",
        auto,
        vec!["received", "queued", "executing", "completed", "rolling_back", "rolled_back"],
    );
    // intake → approval → executor
    let webhook = |path: String, extra: Value| {
        let mut body = json!({"action_type": "http_request", "payload": {"method": "POST", "url": format!("{hooks}{path}")}, "approver": APPROVER});
        for (k, v) in extra.as_object().unwrap() {
            body["payload"][k] = v.clone();
        }
        body
    };
    let approved = create(&api, &owner, webhook(format!("/hook/ok-audit-{}", someone("a")), json!({}))).await;
    walk("approved", approved, vec!["received", "awaiting_approval", "approved", "queued", "executing", "completed"]);
    let rejected = create(&api, &owner, webhook(format!("/hook/ok-audit-{}", someone("r")), json!({}))).await;
    walk("rejected", rejected, vec!["received", "awaiting_approval", "rejected"]);
    let retried = create(&api, &owner, webhook(format!("/hook/flaky-1-audit-{}", someone("f")), json!({}))).await;
    walk(
        "retried",
        retried,
        vec!["received", "awaiting_approval", "approved", "queued", "executing", "queued", "executing", "completed"],
    );
    let failed = create(&api, &owner, webhook(format!("/hook/bad-audit-{}", someone("b")), json!({}))).await;
    walk("failed", failed, vec!["received", "awaiting_approval", "approved", "queued", "executing", "failed"]);
    let undo = json!({"rollback": {"method": "POST", "url": format!("{hooks}/hook/bad-undo-{}", someone("u"))}});
    let undo_fails = create(&api, &owner, webhook(format!("/hook/ok-audit-{}", someone("u")), undo)).await;
    walk(
        "rollback failed",
        undo_fails,
        vec![
            "received",
            "awaiting_approval",
            "approved",
            "queued",
            "executing",
            "completed",
            "rolling_back",
            "rollback_failed",
        ],
    );
    // sweep: expiry and scheduled work
    let expiring = create(
        &api,
        &owner,
        json!({"action_type": "gmail.spam", "payload": {"message_id": message}, "approver": APPROVER}),
    )
    .await;
    walk("expired", expiring, vec!["received", "awaiting_approval", "expired"]);
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let scheduled = create(&api, &owner, json!({"action_type": "gmail.mark_read", "payload": {"message_id": message}, "confidence": 0.9, "scheduled_for": soon})).await;
    walk("scheduled", scheduled, vec!["received", "pending", "queued", "executing", "completed"]);
    // intake: cancel, manual, blocked
    let later = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let cancelled = create(&api, &owner, json!({"action_type": "gmail.label", "payload": {"message_id": message, "label_ids": ["Label_1"]}, "confidence": 0.9, "scheduled_for": later})).await;
    walk("cancelled", cancelled, vec!["received", "pending", "cancelled"]);
    let done = create(&api, &owner, json!({"action_type": "gmail.delete", "payload": {"message_id": message}})).await;
    walk("done manually", done, vec!["received", "manual", "done_manually"]);
    let dismissed =
        create(&api, &owner, json!({"action_type": "gmail.delete", "payload": {"message_id": message}})).await;
    walk("dismissed", dismissed, vec!["received", "manual", "dismissed"]);
    let blocked = create(
        &api,
        &owner,
        json!({"action_type": "make_payment", "payload": {"amount": 10, "currency": "USD", "recipient": "acme"}}),
    )
    .await;
    walk("blocked", blocked, vec!["received", "blocked"]);
    // executor: a plan resting in a wait step
    let plan = json!({"steps": [
        {"action_type": "gmail.label", "payload": {"message_id": message, "label_ids": ["Label_2"]}},
        {"wait_for": "PT1S"},
        {"action_type": "gmail.label", "payload": {"message_id": message, "label_ids": ["Label_3"]}}
    ], "confidence": 0.9});
    let waited = create(&api, &owner, plan).await;
    walk(
        "plan with a wait",
        waited,
        vec!["received", "queued", "executing", "queued", "executing", "waiting", "queued", "executing", "completed"],
    );

    // The humans' and owners' parts of the walks.
    let by_name = |name: &str| walks.iter().find(|w| w.name == name).unwrap().id.clone();
    for name in ["approved", "retried", "failed", "rollback failed"] {
        let r = api.post(&format!("/actions/{}/approve", by_name(name)), APPROVER, json!({})).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    let r = api.post(&format!("/actions/{}/reject", by_name("rejected")), APPROVER, json!({"reason": "no"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (name, verb) in [("cancelled", "cancel"), ("done manually", "done"), ("dismissed", "dismiss")] {
        let r = api.post(&format!("/actions/{}/{verb}", by_name(name)), &owner, json!({})).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    for name in ["auto then rolled back", "rollback failed"] {
        let id = by_name(name);
        wait_for_status(&api, &owner, &id, &["completed"], 60).await;
        let r = api.post(&format!("/actions/{id}/rollback"), &owner, json!({})).await;
        assert!(r.status == 200 || r.status == 502 || r.status == 409, "{name}: {} {}", r.status, r.body);
    }

    for walk in &walks {
        let last = *walk.expected.last().unwrap();
        let action = wait_for_status(&api, &walk.owner, &walk.id, &[last], 60).await;
        let events = trail(&api, &walk.owner, &walk.id).await;
        check_invariants(walk, &events, action["status"].as_str().unwrap());
        let moves: Vec<&str> =
            events.iter().filter(|e| e["from"] != e["to"]).map(|e| e["to"].as_str().unwrap()).collect();
        assert_eq!(moves, walk.expected, "{}: the trail has exactly one event per transition", walk.name);
        // Who did what: the function that made each kind of move.
        for e in &events {
            let actor = e["actor"].as_str().unwrap();
            let want = match (e["from"].as_str(), e["to"].as_str().unwrap()) {
                (Some("awaiting_approval"), "approved" | "rejected") => APPROVER,
                (Some("awaiting_approval"), "expired") | (Some("pending"), "queued") => "sweep",
                (Some("queued"), "executing") | (Some("executing"), _) => "executor",
                (Some("pending" | "manual"), _) | (None, _) | (Some("completed"), "rolling_back") => {
                    walk.owner.as_str()
                }
                _ => continue,
            };
            assert_eq!(actor, want, "{}: {e}", walk.name);
        }
    }

    // Admin paths: policy, circuit breaker and user changes have trails of their own.
    let admin = format!("{}:admin", someone("root"));
    let admin_id = admin.trim_end_matches(":admin");
    let current = api.get("/admin/policy", &admin).await;
    let before = current.body["events"].as_array().unwrap().len();
    let put = api.call("PUT", "/admin/policy", Some(&admin), Some(current.body["policy"].to_string()), &[]).await;
    assert_eq!(put.status, 200, "{}", put.body);
    let events = api.get("/admin/policy", &admin).await.body["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), before + 1, "one event per policy change");
    assert_eq!(&events[..before], &current.body["events"].as_array().unwrap()[..], "earlier policy events unchanged");
    let last = events.last().unwrap();
    assert_eq!((last["actor"].as_str(), last["to"].clone()), (Some(admin_id), put.body["version"].clone()));

    let before = api.get("/admin/circuit-breaker", &admin).await.body["events"].as_array().unwrap().clone();
    assert_eq!(api.post("/admin/circuit-breaker/reset", &admin, json!({})).await.status, 200);
    let after = api.get("/admin/circuit-breaker", &admin).await.body["events"].as_array().unwrap().clone();
    assert_eq!(after.len(), before.len() + 1, "one event per breaker change");
    assert_eq!(&after[..before.len()], &before[..]);
    assert_eq!(
        (after.last().unwrap()["actor"].as_str(), after.last().unwrap()["to"].as_str()),
        (Some(admin_id), Some("closed"))
    );

    let user = someone("kyc");
    for verified in [true, false] {
        let r = set_kyc(&api, &admin, &user, verified).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    store_google_token(&api, &user).await;
    let r = api.get(&format!("/admin/users/{user}/audit"), &admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let moves: Vec<(u64, &str, &str)> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        moves,
        vec![
            (1, "kyc_unverified", "kyc_verified"),
            (2, "kyc_verified", "kyc_unverified"),
            (3, "google_token", "google_token_stored")
        ]
    );
    assert!(!r.body.to_string().contains("ya29"), "the token never reaches the audit trail");
    assert_eq!(api.get(&format!("/admin/users/{user}/audit"), &owner).await.status, 403);
}
