//! The safety promise's regressions, driven through the local stack as a user would: no
//! self-approval, the current policy governs waiting work, an unreadable stored policy fails
//! safe, bounded input, idempotent retries. One stack of its own (policy changes affect
//! everyone on it); the tests that change the policy run in one function, in order.

mod common;

use common::{someone, wait_for_status};
use serde_json::{json, Value};
use std::time::Duration;

fn scheduled_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn a_requester_never_approves_their_own_action() {
    let api = common::api_with(&[("POLICY_CACHE_SECS", "0")]);
    let alice = format!("{}@example.com", someone("alice"));
    let hook = json!({"method": "POST", "url": "https://hooks.example.com/x"});

    let own =
        api.post("/actions", &alice, json!({"action_type": "http_request", "payload": hook, "approver": alice})).await;
    assert_eq!((own.status, own.body["error"].as_str()), (403, Some("self_approval")), "{}", own.body);
    let rogue = json!({"action_type": "http_request", "payload": hook, "approver": "inbox@agent-controlled.example"});
    let refused = api.post("/actions", &alice, rogue).await;
    assert_eq!((refused.status, refused.body["field"].as_str()), (400, Some("approver")), "{}", refused.body);

    let boss = format!("{}@example.com", someone("boss"));
    let created =
        api.post("/actions", &alice, json!({"action_type": "http_request", "payload": hook, "approver": boss})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    for caller in [alice.clone(), format!("{alice}:admin")] {
        let r = api.call("POST", &format!("/actions/{id}/approve"), Some(&caller), None, &[]).await;
        assert_eq!((r.status, r.body["error"].as_str()), (403, Some("self_approval")), "{caller}: {}", r.body);
    }
    assert_eq!(api.get(&format!("/actions/{id}"), &alice).await.body["status"], "awaiting_approval");
}

#[tokio::test]
async fn bounded_input_and_idempotent_retries() {
    let api = common::api_with(&[("POLICY_CACHE_SECS", "0")]);
    let owner = someone("carol");
    let mut deep = json!(1);
    for _ in 0..124 {
        deep = json!([deep]);
    }
    let body = json!({"action_type": "http_request", "payload": {"method": "POST", "url": "https://hooks.example.com/x", "body": deep}});
    let r = api.post("/actions", &owner, body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["field"].as_str().unwrap().starts_with("payload.body"), "{}", r.body);
    assert_eq!(api.get("/actions", &owner).await.status, 200, "the owner's listing stays readable");

    // A retry after its wait_until has passed still gets the first answer.
    let plan = json!({"steps": [{"wait_until": scheduled_in(3)}, {"action_type": "gmail.spam", "payload": {"message_id": "m1"}}]});
    let key = [("Idempotency-Key", "retry-after-wait")];
    let first = api.call("POST", "/actions", Some(&owner), Some(plan.to_string()), &key).await;
    assert_eq!(first.status, 201, "{}", first.body);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let again = api.call("POST", "/actions", Some(&owner), Some(plan.to_string()), &key).await;
    assert_eq!((again.status, &again.body["action_id"]), (200, &first.body["action_id"]), "{}", again.body);
}

async fn put_policy(api: &common::Api, admin: &str, policy: &Value) -> common::Reply {
    api.call("PUT", "/admin/policy", Some(admin), Some(policy.to_string()), &[]).await
}

#[tokio::test]
async fn the_policy_current_at_each_step_governs_and_an_unreadable_one_fails_safe() {
    let api = common::api_with(&[("POLICY_CACHE_SECS", "0")]);
    let admin = format!("{}:admin", someone("root"));
    let owner = someone("dave");
    let deployed = api.call("GET", "/admin/policy", Some(&admin), None, &[]).await.body["policy"].clone();

    // Out-of-range values are refused whole.
    let mut overflow = deployed.clone();
    overflow["auto_execution"]["cooldown"] = json!("P999999999D");
    assert_eq!(put_policy(&api, &admin, &overflow).await.status, 400);

    // Tier-1 work scheduled ahead, then its type is blocked: it never runs.
    let flag = |secs| json!({"action_type": "gmail.mark_read", "payload": {"message_id": "m1"}, "confidence": 0.95, "scheduled_for": scheduled_in(secs)});
    let waiting = api.post("/actions", &owner, flag(6)).await;
    assert_eq!((waiting.status, waiting.body["status"].as_str()), (201, Some("pending")), "{}", waiting.body);
    let id = waiting.body["action_id"].as_str().unwrap().to_owned();
    let mut blocked = deployed.clone();
    blocked["types"]["gmail.mark_read"]["blocked"] = json!(true);
    assert_eq!(put_policy(&api, &admin, &blocked).await.status, 200);
    let after =
        wait_for_status(&api, &owner, &id, &["blocked", "queued", "executing", "completed", "failed"], 60).await;
    assert_eq!(after["status"], "blocked", "{after}");
    let trail = common::trail(&api, &owner, &id).await;
    assert!(
        trail.iter().any(|e| e["to"] == "blocked" && e["reason"].as_str().unwrap().contains("current policy")),
        "{trail:?}"
    );

    // The kill switch holds waiting tier-1 work (it does not run, nor is it lost).
    let mut restored = deployed.clone();
    restored["auto_execution"]["enabled"] = json!(false);
    let held = api.post("/actions", &owner, json!({"action_type": "gmail.label", "payload": {"message_id": "m2", "label_ids": ["L"]}, "confidence": 0.95, "scheduled_for": scheduled_in(4)})).await;
    assert_eq!(held.body["status"], "pending", "{}", held.body);
    let held_id = held.body["action_id"].as_str().unwrap().to_owned();
    assert_eq!(put_policy(&api, &admin, &restored).await.status, 200);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let still = api.get(&format!("/actions/{held_id}"), &owner).await.body;
    assert_eq!(still["status"], "pending", "{still}");
    assert!(still["hold_reason"].as_str().unwrap_or_default().starts_with("auto_execution_disabled"), "{still}");

    // An override that no longer parses: nothing runs automatically, the admin sees it and
    // replaces it.
    let stack = &api.stack;
    let sdk = actiongate_local::emulator::sdk_config_for(&stack.emulator).await;
    let table = stack.provisioned.table("ActionsTable").unwrap().to_owned();
    aws_sdk_dynamodb::Client::new(&sdk)
        .update_item()
        .table_name(table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("POLICY".into()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("CURRENT".into()))
        .update_expression("SET #doc = :doc")
        .expression_attribute_names("#doc", "doc")
        .expression_attribute_values(
            ":doc",
            aws_sdk_dynamodb::types::AttributeValue::S("{\"defaults\": {}, \"retired_key\": 1}".into()),
        )
        .send()
        .await
        .unwrap();
    let status = api.call("GET", "/admin/policy", Some(&admin), None, &[]).await;
    assert_eq!(
        (status.status, status.body["source"].as_str(), status.body["valid"].as_bool()),
        (200, Some("fail_safe"), Some(false)),
        "{}",
        status.body
    );
    assert_eq!(status.body["stored"]["retired_key"], 1);
    let now_tier = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "gmail.flag", "payload": {"message_id": "m3"}, "confidence": 0.95, "dry_run": true}),
        )
        .await;
    assert_eq!(now_tier.body["tier"], 2, "no automatic execution on a fail-safe policy: {}", now_tier.body);
    let replaced = put_policy(&api, &admin, &deployed).await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(api.call("GET", "/admin/policy", Some(&admin), None, &[]).await.body["valid"], true);
}
