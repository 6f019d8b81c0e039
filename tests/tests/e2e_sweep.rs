//! End-to-end: the sweep (on a 2-second local timer) doing timed work through the `due` index.

mod common;

use actiongate::domain::action::StepState;
use actiongate::domain::{Status, Tier, UserId};
use actiongate::ports::queue::WorkQueue;
use actiongate::ports::store::*;
use actiongate_local::emulator::sdk_config_for;
use actiongate_local::fixtures;
use actiongate_local::stack::shared_with;
use common::{deliveries_to, fake_state, someone, trail, wait_for_status, Api};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Duration;

const SHORT_EXPIRY_SECS: u64 = 3;

/// Short approvals for `gmail.spam`; automatic execution limited per user (10/hour, 50/day)
/// and roomy for all users together, so the limit test does not starve the others.
fn api() -> Api {
    static POLICY: OnceLock<String> = OnceLock::new();
    let path = POLICY.get_or_init(|| {
        let spam = (
            "[types.\"gmail.spam\"]\ntier = 2",
            format!("[types.\"gmail.spam\"]\ntier = 2\napproval_expiry = \"PT{SHORT_EXPIRY_SECS}S\""),
        );
        let (from, roomy) = common::ROOMY_AUTO_LIMITS;
        let per_user = format!("{roomy}\nper_user_per_hour = {PER_USER_HOUR}\nper_user_per_day = 50");
        let webhook = (
            "[types.http_request]\ntier = 2",
            format!("[types.http_request]\ntier = 2\napproval_expiry = \"PT{WEBHOOK_EXPIRY_SECS}S\""),
        );
        let calendar = (
            "[types.\"calendar.create_event\"]\ntier = 2",
            format!("[types.\"calendar.create_event\"]\ntier = 2\napproval_expiry = \"PT60S\"\nescalate_after = \"PT{ESCALATE_AFTER_SECS}S\"\nescalate_to = [\"{ESCALATION_LEAD}\"]"),
        );
        common::policy_file(
            "e2e-sweep",
            &[(from, &per_user), (spam.0, &spam.1), (webhook.0, &webhook.1), (calendar.0, &calendar.1), PAYMENTS],
        )
    });
    Api { stack: shared_with(&[("POLICY_FILE", path)]), http: reqwest::Client::new() }
}

const PER_USER_HOUR: usize = 10;
/// Payments: one of the treasury group approves, two above 1000.
const PAYMENTS: (&str, &str) = (
    "[types.make_payment]\ntier = 2\nblocked = true",
    "[approver_groups]\ntreasury = [\"ta@example.com\", \"tb@example.com\", \"tc@example.com\"]\n\n[types.make_payment]\ntier = 2\napprovers = [\"group:treasury\"]\npayload_thresholds = [{ field = \"/amount\", above = 1000, approvals_required = 2 }]",
);
/// Calendar events nobody decides are escalated to the lead after a few seconds.
const ESCALATE_AFTER_SECS: u64 = 4;
const ESCALATION_LEAD: &str = "lead@example.com";
/// Long enough for a reminder (halfway) to come well before the expiry, even while the other
/// tests of this binary keep the sweep busy (a reminder 10 s late once met an expired link).
const WEBHOOK_EXPIRY_SECS: u64 = 30;

/// Every mail in the outbox whose text mentions `needle`, oldest first.
async fn mails_about(api: &Api, needle: &str) -> Vec<Value> {
    let outbox = api.call("GET", "/_local/outbox", None, None, &[]).await;
    outbox.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["text"].as_str().is_some_and(|t| t.contains(needle)))
        .cloned()
        .collect()
}

fn link_in(mail: &Value) -> String {
    let text = mail["text"].as_str().unwrap();
    let start = text.find("/approvals/").unwrap();
    text[start..].split_whitespace().next().unwrap().to_owned()
}

/// An approved tier-2 `http_request` of `owner` in `status` (the current policy lets approved
/// work run).
fn approved_webhook(
    owner: &str,
    status: Status,
    payload: Value,
    now: chrono::DateTime<chrono::Utc>,
) -> actiongate::domain::Action {
    let owner_id = UserId::parse(owner).unwrap();
    let mut action = fixtures::action_of(&owner_id, status, now, "http_request", payload);
    (action.tier, action.confidence, action.reasons) = (Some(Tier::Approval), None, vec![]);
    (action.decided_by, action.decided_at) = (Some("approvals@example.com".into()), Some(now));
    action
}

async fn with_google(api: &Api, owner: &str, message: &str) {
    common::seed_message(api, message).await;
    common::store_google_token(api, owner).await;
}

#[tokio::test]
async fn an_undecided_approval_expires_through_the_sweep() {
    let api = api();
    let owner = someone("alice");
    let created = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "gmail.spam", "payload": {"message_id": "m1"}, "approver": "boss@example.com"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    let expired = wait_for_status(&api, &owner, &id, &["expired"], 30).await;
    assert_eq!(expired["status"], "expired");
    let last = trail(&api, &owner, &id).await.last().unwrap().clone();
    assert_eq!(
        (last["actor"].as_str(), last["from"].as_str(), last["to"].as_str()),
        (Some("sweep"), Some("awaiting_approval"), Some("expired"))
    );
    let late = api.post(&format!("/actions/{id}/approve"), "boss@example.com", json!({})).await;
    assert_eq!((late.status, late.body["status"].as_str()), (409, Some("expired")));
}

#[tokio::test]
async fn scheduled_tier_one_work_starts_when_due() {
    let api = api();
    let owner = someone("alice");
    let message = someone("msg");
    with_google(&api, &owner, &message).await;
    let at = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let created = api.post("/actions", &owner, json!({"action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.9, "scheduled_for": at})).await;
    assert_eq!(created.body["status"], "pending", "{}", created.body);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    let done = wait_for_status(&api, &owner, &id, &["completed", "failed"], 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    let started = trail(&api, &owner, &id).await.into_iter().find(|e| e["from"] == "pending").unwrap();
    assert_eq!((started["to"].as_str(), started["actor"].as_str()), (Some("queued"), Some("sweep")));
    let at = chrono::DateTime::parse_from_rfc3339(started["at"].as_str().unwrap()).unwrap();
    let scheduled = chrono::DateTime::parse_from_rfc3339(done["scheduled_for"].as_str().unwrap()).unwrap();
    assert!(at >= scheduled, "started at {at}, before its time {scheduled}");
    assert_eq!(fake_state(&api).await["gmail"][&message], json!(["INBOX", "STARRED"]));
}

#[tokio::test]
async fn concurrent_sweeps_never_start_an_action_twice() {
    let api = api();
    let owner = someone("alice");
    let mut ids = Vec::new();
    let mut messages = Vec::new();
    for _ in 0..4 {
        let message = someone("msg");
        with_google(&api, &owner, &message).await;
        let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
        let r = api.post("/actions", &owner, json!({"action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.9, "scheduled_for": at})).await;
        ids.push(r.body["action_id"].as_str().unwrap().to_owned());
        messages.push(message);
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // Three sweeps at once, besides the timer's.
    let url = format!("http://127.0.0.1:{}/2015-03-31/functions/sweep/invocations", api.stack.invoke_port);
    let sweeps = (0..3).map(|_| api.http.post(&url).json(&json!({"source": "test"})).send());
    for r in common::futures_like_join(sweeps).await {
        let report: Value = r.unwrap().json().await.unwrap();
        assert!(report.get("started").is_some(), "{report}");
    }
    for id in &ids {
        let done = wait_for_status(&api, &owner, id, &["completed", "failed"], 30).await;
        assert_eq!(done["status"], "completed");
        let events = trail(&api, &owner, id).await;
        assert_eq!(
            events.iter().filter(|e| e["from"] == "pending" && e["to"] == "queued").count(),
            1,
            "{id} started twice"
        );
        assert_eq!(events.iter().filter(|e| e["to"] == "executing").count(), 1);
    }
}

#[tokio::test]
async fn a_crashed_executors_step_is_recovered_by_the_sweep() {
    let api = api();
    // An action its executor claimed and then died on: executing, lease long gone, and no
    // message left on the queue. Only the sweep can find it.
    let store = common::store_of(&api).await;
    let owner = someone("alice");
    let path = format!("/hook/ok-orphan-{}", someone("x"));
    let payload = json!({"method": "POST", "url": format!("{}{path}", api.stack.fakes_url)});
    let now = chrono::Utc::now();
    let mut action = approved_webhook(&owner, Status::Executing, payload, now);
    action.steps[0].state = StepState::Running;
    action.steps[0].attempts = 1;
    action.attempts = 1;
    action.lease_expires_at = Some(now - chrono::Duration::minutes(1));
    let mut event = fixtures::event(&action, 1, None, Status::Executing);
    event.reason = "claimed, then the executor died".into();
    store.create_action(&action, &[event], None, &[], &[], None, now).await.unwrap();
    let id = action.action_id.to_string();
    let done = wait_for_status(&api, &owner, &id, &["completed", "failed"], 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    let recovered =
        trail(&api, &owner, &id).await.into_iter().find(|e| e["from"] == "executing" && e["to"] == "queued").unwrap();
    assert_eq!(recovered["actor"], "sweep");
    assert_eq!(deliveries_to(&fake_state(&api).await, &path), 1);
}

#[tokio::test]
async fn sixty_tier_one_actions_run_exactly_the_limit_and_the_rest_wait_with_reasons() {
    let api = api();
    let owner = someone("busy");
    let mut ids = Vec::new();
    for i in 0..60 {
        let message = format!("{owner}-m{i}");
        if i == 0 {
            with_google(&api, &owner, &message).await;
        } else {
            common::seed_labels(&api, &message, &["INBOX"]).await;
        }
        let r = api
            .post(
                "/actions",
                &owner,
                json!({"action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.9}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["action_id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..PER_USER_HOUR] {
        let done = wait_for_status(&api, &owner, id, &["completed", "failed"], 60).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    // Give the sweep a few rounds: it must not start any of the others in this hour.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let mut statuses = std::collections::BTreeMap::new();
    for id in &ids {
        let action = api.get(&format!("/actions/{id}"), &owner).await.body;
        *statuses.entry(action["status"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        if action["status"] == "pending" {
            assert!(
                action["hold_reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("auto_limit: automatic execution per user is limited to 10 per hour"),
                "{action}"
            );
            let placed = trail(&api, &owner, id).await[1].clone();
            assert_eq!(placed["to"], "pending");
            assert!(placed["reason"].as_str().unwrap().contains("auto_limit"), "{placed}");
        }
    }
    assert_eq!(statuses, std::collections::BTreeMap::from([("completed".to_owned(), 10), ("pending".to_owned(), 50)]));
}

#[tokio::test]
async fn an_entity_acted_on_recently_cools_down() {
    let api = api();
    let owner = someone("alice");
    let message = someone("msg");
    with_google(&api, &owner, &message).await;
    let body = json!({"action_type": "gmail.flag", "payload": {"message_id": message}, "confidence": 0.9, "rate_limit_key": message});
    let first = api.post("/actions", &owner, body.clone()).await;
    assert_eq!(first.body["status"], "queued", "{}", first.body);
    let second = api.post("/actions", &owner, body).await;
    assert_eq!(second.body["status"], "pending", "{}", second.body);
    let held = api.get(&format!("/actions/{}", second.body["action_id"].as_str().unwrap()), &owner).await.body;
    assert!(held["hold_reason"].as_str().unwrap().starts_with("cooldown:"), "{held}");
}

#[tokio::test]
async fn the_approver_is_reminded_halfway_and_the_requester_told_on_expiry() {
    let api = api();
    let owner = format!("{}@example.com", someone("requester"));
    let approver = format!("{}@example.com", someone("boss"));
    let created = api
        .post("/actions", &owner, json!({"action_type": "http_request", "payload": {"method": "POST", "url": "https://hooks.example.com/x"}, "approver": approver}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["action_id"].as_str().unwrap().to_owned();

    let mut mails = Vec::new();
    for _ in 0..5 * WEBHOOK_EXPIRY_SECS {
        mails = mails_about(&api, &id).await.into_iter().filter(|m| m["to"] == json!([approver])).collect();
        if mails.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(mails.len(), 2, "the request and one reminder: {mails:?}");
    assert!(mails[1]["subject"].as_str().unwrap().starts_with("Reminder: Approval needed"));
    let (first, second) = (link_in(&mails[0]), link_in(&mails[1]));
    assert_ne!(first, second);
    // A link is never closed before its successor is delivered: both work until a decision.
    assert_eq!(api.call("GET", &first, None, None, &[]).await.status, 200, "the earlier link still works");
    let page = api.call("GET", &second, None, None, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let note = trail(&api, &owner, &id)
        .await
        .into_iter()
        .find(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("reminder sent")))
        .unwrap();
    assert_eq!(
        (note["from"].as_str(), note["to"].as_str(), note["actor"].as_str()),
        (Some("awaiting_approval"), Some("awaiting_approval"), Some("sweep"))
    );

    // Nobody decides: it expires, and the requester hears about it.
    wait_for_status(&api, &owner, &id, &["expired"], 30).await;
    let mut told = Vec::new();
    for _ in 0..25 {
        told = mails_about(&api, &id).await.into_iter().filter(|m| m["to"] == json!([owner])).collect();
        if !told.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(told.len(), 1);
    assert!(told[0]["subject"].as_str().unwrap().starts_with("Expired without a decision"));
    assert_eq!(api.call("GET", &second, None, None, &[]).await.status, 410);
    assert_eq!(api.call("GET", &first, None, None, &[]).await.status, 410);
}

#[tokio::test]
async fn queued_work_scheduled_for_tomorrow_is_not_run_by_a_resend_or_a_stray_message() {
    let api = api();
    let store = common::store_of(&api).await;
    let owner = someone("patient");
    let path = format!("/hook/ok-tomorrow-{}", someone("x"));
    let payload = json!({"method": "POST", "url": format!("{}{path}", api.stack.fakes_url)});
    let now = chrono::Utc::now();
    // Approved ten minutes ago, for tomorrow: the old sweep re-sent queued work 5 minutes
    // after its last change, and the executor ran whatever arrived.
    let mut action = approved_webhook(&owner, Status::Queued, payload, now - chrono::Duration::minutes(10));
    action.scheduled_for = Some(now + chrono::Duration::days(1));
    let event = fixtures::event(&action, 1, None, Status::Queued);
    store.create_action(&action, &[event], None, &[], &[], None, now).await.unwrap();
    let id = action.action_id.to_string();
    let sdk = sdk_config_for(&api.stack.emulator).await;
    let queue = actiongate::adapters::aws::sqs::SqsQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        api.stack.provisioned.queue_url("WorkQueue").unwrap(),
    );
    queue.enqueue(&actiongate::ports::queue::ExecuteMessage::step(action.action_id, 0), 0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let seen = api.get(&format!("/actions/{id}"), &owner).await.body;
    assert_eq!((seen["status"].as_str(), seen["attempts"].as_u64()), (Some("queued"), Some(0)), "{seen}");
    assert_eq!(deliveries_to(&fake_state(&api).await, &path), 0, "nothing ran before its time");
}

#[tokio::test]
async fn an_interrupted_rollback_is_resumed_and_a_second_one_is_refused_meanwhile() {
    let api = api();
    let store = common::store_of(&api).await;
    let owner = someone("undoer");
    let undo = format!("/hook/ok-undo-{}", someone("u"));
    let payload = json!({"method": "POST", "url": format!("{}/hook/ok-done-{}", api.stack.fakes_url, someone("d")),
        "rollback": {"method": "POST", "url": format!("{}{undo}", api.stack.fakes_url)}});
    let now = chrono::Utc::now();
    // Completed, then a rollback started and its worker died (the lease ran out).
    let mut action = approved_webhook(&owner, Status::RollingBack, payload.clone(), now);
    action.steps[0].state = StepState::Completed;
    action.steps[0].result = Some(json!({"status": 200}));
    action.lease_expires_at = Some(now - chrono::Duration::minutes(1));
    store
        .create_action(&action, &[fixtures::event(&action, 1, None, Status::RollingBack)], None, &[], &[], None, now)
        .await
        .unwrap();
    let id = action.action_id.to_string();
    let done = wait_for_status(&api, &owner, &id, &["rolled_back", "rollback_failed"], 30).await;
    assert_eq!(done["status"], "rolled_back", "{done}");
    assert_eq!(deliveries_to(&fake_state(&api).await, &undo), 1, "undone exactly once");

    // While a rollback holds its lease, another one is refused instead of undoing it twice.
    let mut busy = approved_webhook(&owner, Status::RollingBack, payload, now);
    busy.steps[0].state = StepState::Completed;
    busy.lease_expires_at = Some(now + chrono::Duration::minutes(5));
    store
        .create_action(&busy, &[fixtures::event(&busy, 1, None, Status::RollingBack)], None, &[], &[], None, now)
        .await
        .unwrap();
    let second = api.post(&format!("/actions/{}/rollback", busy.action_id), &owner, json!({})).await;
    assert_eq!((second.status, second.body["error"].as_str()), (409, Some("invalid_state")), "{}", second.body);
}

#[tokio::test]
async fn an_approval_mail_that_never_went_out_is_delivered_by_the_sweep_with_a_working_link() {
    let api = api();
    let store = common::store_of(&api).await;
    let owner = someone("requester");
    let approver = format!("{}@example.com", someone("boss"));
    let now = chrono::Utc::now();
    // Stored, then intake stopped before its mail went out.
    let payload = json!({"method": "POST", "url": "https://hooks.example.com/x"});
    let mut action = approved_webhook(&owner, Status::AwaitingApproval, payload, now - chrono::Duration::minutes(2));
    (action.decided_by, action.decided_at) = (None, None);
    action.approver = actiongate::domain::EmailAddress::parse(&approver);
    action.approval_expires_at = Some(now + chrono::Duration::hours(1));
    action.approval_mail_pending = true;
    store
        .create_action(
            &action,
            &[fixtures::event(&action, 1, None, Status::AwaitingApproval)],
            None,
            &[],
            &[],
            None,
            now,
        )
        .await
        .unwrap();
    let id = action.action_id.to_string();
    let mut mails = Vec::new();
    for _ in 0..100 {
        mails = mails_about(&api, &id).await;
        if !mails.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["to"], json!([approver]));
    let page = api.call("GET", &link_in(&mails[0]), None, None, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let seen = api.get(&format!("/actions/{id}"), &owner).await.body;
    assert_eq!(seen["status"], "awaiting_approval");
    let note = trail(&api, &owner, &id)
        .await
        .into_iter()
        .find(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("approval requested from")));
    assert_eq!(note.map(|e| e["actor"].clone()), Some(json!("sweep")));
}

#[tokio::test]
async fn an_unanswered_approval_is_escalated_with_a_working_link_of_its_own() {
    let api = api();
    let owner = someone("alice");
    let approver = format!("{}@example.com", someone("boss"));
    let event = json!({"action_type": "calendar.create_event", "approver": approver,
        "payload": {"summary": someone("Board"), "start": "2027-03-01T10:00:00Z", "end": "2027-03-01T11:00:00Z"}});
    let created = api.post("/actions", &owner, event).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let mut to_lead = Vec::new();
    for _ in 0..150 {
        to_lead = mails_about(&api, &id).await.into_iter().filter(|m| m["to"] == json!([ESCALATION_LEAD])).collect();
        if !to_lead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(to_lead.len(), 1, "the lead is asked once");
    assert!(started.elapsed() >= Duration::from_secs(ESCALATE_AFTER_SECS - 1), "not before escalate_after");
    let escalated = trail(&api, &owner, &id)
        .await
        .into_iter()
        .find(|e| e["reason"].as_str().is_some_and(|r| r.contains("escalated to lead@example.com")))
        .expect("the escalation is audited");
    assert_eq!(escalated["actor"], "sweep");
    // The boss's link still works, and the lead's decides.
    let boss_link = link_in(&mails_about(&api, &id).await.into_iter().find(|m| m["to"] == json!([approver])).unwrap());
    assert_eq!(api.call("GET", &boss_link, None, None, &[]).await.status, 200);
    let lead_link = link_in(&to_lead[0]);
    let decided = api
        .call(
            "POST",
            &lead_link,
            None,
            Some("decision=approve".into()),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(decided.status, 200, "{}", decided.body);
    let action = api.get(&format!("/actions/{id}"), &owner).await.body;
    assert_ne!(action["status"], "awaiting_approval", "{action}");
    assert_eq!(action["decided_by"], ESCALATION_LEAD);
}

/// A form POST to an approval link.
async fn submit(api: &Api, link: &str, form: &str) -> common::Reply {
    api.call("POST", link, None, Some(form.to_owned()), &[("content-type", "application/x-www-form-urlencoded")]).await
}

#[tokio::test]
async fn an_edited_payload_that_crosses_a_threshold_needs_the_extra_approval() {
    let api = api();
    let owner = someone("alice");
    let reference = someone("inv");
    let payment = json!({"action_type": "make_payment", "risk_score": 10, "confidence": 0.9,
        "payload": {"amount": 120, "currency": "EUR", "recipient": "ACME", "reference": reference}});
    let created = api.post("/actions", &owner, payment).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["approvals_required"], 1);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    let first_round = |mails: Vec<Value>, who: &str| mails.into_iter().find(|m| m["to"] == json!([who]));
    let mut mails = Vec::new();
    for _ in 0..50 {
        mails = mails_about(&api, &id).await;
        if mails.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ta_link = link_in(&first_round(mails.clone(), "ta@example.com").expect("ta is asked"));
    let tb_old = link_in(&first_round(mails, "tb@example.com").expect("tb is asked"));

    // ta opens the page, changes the amount past the threshold in its edit form, and approves.
    let page = api.call("GET", &ta_link, None, None, &[]).await;
    assert!(page.body.as_str().unwrap().contains("Approve with these changes"), "{}", page.body);
    let edited = json!({"amount": 5000, "currency": "EUR", "recipient": "ACME", "reference": reference});
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("decision", "approve")
        .append_pair("payload", &edited.to_string())
        .finish();
    let answer = submit(&api, &ta_link, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.as_str().unwrap().contains("1 of 2"), "{}", answer.body);
    let waiting = api.get(&format!("/actions/{id}"), &owner).await.body;
    assert_eq!(waiting["status"], "awaiting_approval", "{waiting}");
    assert_eq!((waiting["payload"]["amount"].as_i64(), waiting["approvals_required"].as_i64()), (Some(5000), Some(2)));
    assert_eq!(waiting["edits"][0]["fields"], json!(["/amount"]));

    // tb's link was for 120: it decides nothing now.
    let stale = submit(&api, &tb_old, "decision=approve").await;
    assert_eq!(stale.status, 410, "{}", stale.body);
    // The sweep asks tb and tc again with links for 5000; tb's new link gives the second approval.
    let mut tb_new = None;
    for _ in 0..100 {
        let to_tb: Vec<String> = mails_about(&api, &id)
            .await
            .into_iter()
            .filter(|m| m["to"] == json!(["tb@example.com"]))
            .map(|m| link_in(&m))
            .collect();
        if to_tb.len() >= 2 {
            assert!(
                mails_about(&api, &id).await.iter().filter(|m| m["to"] == json!(["ta@example.com"])).count() == 1,
                "the editor is not asked again"
            );
            tb_new = to_tb.last().cloned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tb_new = tb_new.expect("tb is asked again after the edit");
    let page = api.call("GET", &tb_new, None, None, &[]).await;
    assert!(page.body.as_str().unwrap().contains("5000"), "the new link shows the new amount");
    let second = submit(&api, &tb_new, "decision=approve").await;
    assert_eq!(second.status, 200, "{}", second.body);
    let decided = api.get(&format!("/actions/{id}"), &owner).await.body;
    assert_ne!(decided["status"], "awaiting_approval", "{decided}");
    assert_eq!(decided["approvals"].as_array().unwrap().len(), 2, "{decided}");
    let events = trail(&api, &owner, &id).await;
    let edit = events
        .iter()
        .find(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("payload edited by ta@example.com")))
        .expect("the edit is audited");
    assert_eq!(
        edit["detail"]["edit"]["changes"][0],
        json!({"op": "replace", "path": "/amount", "from": 120, "value": 5000})
    );
}
