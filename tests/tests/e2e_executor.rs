//! End-to-end execution: work flows from the queue to the executor (under cargo lambda) as
//! real SQS events; handlers act on stateful fakes; wait steps fire through the scheduler.

mod common;

use actiongate_local::emulator::sdk_config_for;
use common::{approved_webhook, deliveries_to, effects_on, fake_state, someone, trail, wait_for_status, Api};
use serde_json::{json, Value};

fn api() -> Api {
    common::api()
}

use common::send_to_work_queue;

#[tokio::test]
async fn duplicate_messages_run_the_side_effect_once() {
    let api = api();
    let owner = someone("alice");
    let path = format!("/hook/ok-dup-{}", someone("x"));
    let id = approved_webhook(&api, &owner, &path, json!({})).await;
    // Two more copies right behind the real one: likely in the same batch, so concurrent.
    let message = json!({"action_id": id, "step": 0}).to_string();
    send_to_work_queue(&api, &message).await;
    send_to_work_queue(&api, &message).await;
    let done = wait_for_status(&api, &owner, &id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    // And one more, long after it finished.
    send_to_work_queue(&api, &message).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let state = fake_state(&api).await;
    assert_eq!(deliveries_to(&state, &path), 1, "three duplicates, one side effect");
    let claims = trail(&api, &owner, &id).await.iter().filter(|e| e["to"] == "executing").count();
    assert_eq!(claims, 1);
    assert_eq!(done["attempts"], 1);
}

#[tokio::test]
async fn transient_failures_retry_with_backoff_then_succeed() {
    let api = api();
    let owner = someone("alice");
    let path = format!("/hook/flaky-2-{}", someone("x"));
    let id = approved_webhook(&api, &owner, &path, json!({})).await;
    let done = wait_for_status(&api, &owner, &id, &["completed", "failed"], 90).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 3);
    let events = trail(&api, &owner, &id).await;
    let retries: Vec<&Value> = events.iter().filter(|e| e["from"] == "executing" && e["to"] == "queued").collect();
    assert_eq!(retries.len(), 2, "{events:?}");
    for (n, retry) in retries.iter().enumerate() {
        assert_eq!(retry["detail"]["attempt"], n as u64 + 1);
        assert_eq!(retry["detail"]["error"]["code"], "http_503");
        assert!(retry["reason"].as_str().unwrap().contains("retrying in"));
    }
    // Each retry waited (at least) the delay it announced.
    let claims: Vec<chrono::DateTime<chrono::FixedOffset>> = events
        .iter()
        .filter(|e| e["to"] == "executing")
        .map(|e| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap())
        .collect();
    for (n, retry) in retries.iter().enumerate() {
        let announced: i64 = retry["reason"]
            .as_str()
            .unwrap()
            .rsplit("retrying in ")
            .next()
            .unwrap()
            .trim_end_matches('s')
            .parse()
            .unwrap();
        assert!((claims[n + 1] - claims[n]).num_seconds() + 1 >= announced, "attempt {} came too early", n + 2);
    }
    assert_eq!(effects_on(&fake_state(&api).await, &path), 1);
}

#[tokio::test]
async fn a_permanent_failure_fails_at_once() {
    let api = api();
    let owner = someone("alice");
    let path = format!("/hook/bad-{}", someone("x"));
    let id = approved_webhook(&api, &owner, &path, json!({})).await;
    let done = wait_for_status(&api, &owner, &id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["error"]["code"], "http_400");
    assert_eq!(done["steps"][0]["state"], "failed");
    assert_eq!(deliveries_to(&fake_state(&api).await, &path), 1);
}

#[tokio::test]
async fn a_plan_rests_in_waiting_and_resumes_when_the_schedule_fires() {
    let api = api();
    let owner = someone("alice");
    let message = someone("msg");
    common::seed_message(&api, &message).await;
    common::store_google_token(&api, &owner).await;
    let plan = json!({"steps": [
        {"action_type": "gmail.label", "payload": {"message_id": message, "label_ids": ["Label_follow_up"]}},
        {"wait_for": "PT3S"},
        {"action_type": "gmail.flag", "payload": {"message_id": message}}
    ], "confidence": 0.9});
    let created = api.post("/actions", &owner, plan).await;
    assert_eq!((created.status, created.body["tier"].as_u64()), (201, Some(1)), "{}", created.body);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    let waiting = wait_for_status(&api, &owner, &id, &["waiting", "completed", "failed"], 60).await;
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    assert_eq!(waiting["steps"][0]["state"], "completed");
    assert_eq!(waiting["steps"][1]["state"], "waiting");
    assert_eq!(fake_state(&api).await["gmail"][&message], json!(["INBOX", "Label_follow_up"]));
    let done = wait_for_status(&api, &owner, &id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(fake_state(&api).await["gmail"][&message], json!(["INBOX", "Label_follow_up", "STARRED"]));
    let moves: Vec<String> = trail(&api, &owner, &id)
        .await
        .iter()
        .map(|e| format!("{}>{}", e["from"].as_str().unwrap_or("-"), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        moves,
        vec![
            "->received",
            "received>queued",
            "queued>executing",
            "executing>queued",
            "queued>executing",
            "executing>waiting",
            "waiting>queued",
            "queued>executing",
            "executing>completed"
        ]
    );
    let woke = chrono::DateTime::parse_from_rfc3339(done["steps"][1]["finished_at"].as_str().unwrap()).unwrap();
    let slept = chrono::DateTime::parse_from_rfc3339(done["steps"][1]["started_at"].as_str().unwrap()).unwrap();
    assert!((woke - slept).num_seconds() >= 3, "the wait lasted its duration");
}

#[tokio::test]
async fn a_malformed_message_fails_alone_and_reaches_the_dead_letter_queue() {
    let api = api();
    // A batch straight to the executor: one malformed, one stale duplicate of finished work.
    let owner = someone("alice");
    let id = approved_webhook(&api, &owner, &format!("/hook/ok-batch-{}", someone("x")), json!({})).await;
    wait_for_status(&api, &owner, &id, &["completed"], 60).await;
    let record = |mid: &str, body: &str| json!({"messageId": mid, "receiptHandle": format!("rh-{mid}"), "body": body, "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:WorkQueue", "awsRegion": "us-east-1"});
    let event = json!({"Records": [record("good-1", &json!({"action_id": id, "step": 0}).to_string()), record("bad-1", "{this is not json"), record("bad-2", "{\"action_id\": 42}")]});
    let url = format!("http://127.0.0.1:{}/2015-03-31/functions/executor/invocations", api.stack.invoke_port);
    let response: Value = api.http.post(url).json(&event).send().await.unwrap().json().await.unwrap();
    let mut failed: Vec<&str> = response["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    failed.sort();
    assert_eq!(failed, vec!["bad-1", "bad-2"], "{response}");

    // Through the real queue: redelivered until maxReceiveCount, then dead-lettered.
    let marker = someone("poison");
    send_to_work_queue(&api, &format!("poison {marker}")).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk_config_for(&api.stack.emulator).await);
    let dlq = api.stack.provisioned.queue_url("WorkDeadLetterQueue").unwrap();
    let mut found = false;
    for _ in 0..60 {
        let out = sqs
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        if out.messages().iter().any(|m| m.body().is_some_and(|b| b.contains(&marker))) {
            found = true;
            break;
        }
    }
    assert!(found, "the malformed message never reached the dead-letter queue");
}

#[tokio::test]
async fn decisions_and_the_end_are_posted_signed_to_the_notify_url_and_retried() {
    let api = api();
    let owner = someone("nora");
    let hook = format!("/hook/flaky-1-notify-{}", someone("n"));
    let notify_url = format!("{}{hook}", api.stack.fakes_url);
    let id =
        approved_webhook(&api, &owner, &format!("/hook/ok-{}", someone("w")), json!({"notify_url": notify_url})).await;
    wait_for_status(&api, &owner, &id, &["completed"], 30).await;
    // Each notification's first delivery meets a 503; the retry (within 10 s) gets through.
    let mut state = fake_state(&api).await;
    for _ in 0..120 {
        if effects_on(&state, &hook) >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        state = fake_state(&api).await;
    }
    assert_eq!(effects_on(&state, &hook), 2, "{state}");
    let deliveries: Vec<&Value> =
        state["deliveries"].as_array().unwrap().iter().filter(|d| d["path"] == hook.as_str()).collect();
    assert_eq!(deliveries.len(), 4, "each notification failed once, then got through: {deliveries:?}");

    // Signed with the owner's own receiver key (from GET /notifications/key), over the exact
    // body; that key is derived from the master key in Secrets Manager, and nobody else's fits.
    let given = api.get("/notifications/key", &owner).await;
    assert_eq!(given.status, 200, "{}", given.body);
    let key = given.body["key"].as_str().unwrap().to_owned();
    let sdk = sdk_config_for(&api.stack.emulator).await;
    let master = aws_sdk_secretsmanager::Client::new(&sdk)
        .get_secret_value()
        .secret_id("actiongate/local/NotificationKey")
        .send()
        .await
        .unwrap()
        .secret_string
        .unwrap();
    let owner_id = actiongate::domain::UserId::parse(&owner).unwrap();
    assert_eq!(Some(key.clone()), actiongate::domain::notify::receiver_key(master.as_bytes(), &owner_id));
    let other = api.get("/notifications/key", &someone("eve")).await.body["key"].as_str().unwrap().to_owned();
    assert_ne!(other, key);
    let mut moves = Vec::new();
    for d in &deliveries {
        let body = d["body"].as_str().unwrap();
        assert!(actiongate_local::fakes::signed(&key, d["signature"].as_str().unwrap(), body.as_bytes()), "{d}");
        assert!(!actiongate_local::fakes::signed(&other, d["signature"].as_str().unwrap(), body.as_bytes()));
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (event["event"].as_str(), event["action_id"].as_str()),
            (Some("action.status_changed"), Some(id.as_str()))
        );
        assert_eq!(d["idempotency_key"], event["event_id"], "the event id is the idempotency key");
        moves.push(format!("{}->{}", event["from"].as_str().unwrap(), event["to"].as_str().unwrap()));
    }
    moves.sort();
    moves.dedup();
    assert_eq!(moves, vec!["awaiting_approval->queued", "executing->completed"]);

    let shown = api.get(&format!("/actions/{id}/notifications"), &owner).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let notifications = shown.body["notifications"].as_array().unwrap();
    assert!(notifications.iter().all(|n| n["state"] == "delivered" && n["attempts"] == 2), "{}", shown.body);
    assert_eq!(shown.body["attempts"].as_array().unwrap().len(), 4, "every attempt is audited: {}", shown.body);
    assert_eq!(api.get(&format!("/actions/{id}/notifications"), &someone("eve")).await.status, 404);
}
