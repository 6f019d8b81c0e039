//! Each handler against its stateful fake (or the emulator's SES): the effect, the snapshot,
//! and a rollback that restores the fake's state.

use actiongate::adapters::aws::ses::SesMailer;
use actiongate::domain::action::StepState;
use actiongate::domain::{ActionId, Status, UserId};
use actiongate::handlers::webhook::{AddressGuard, Allowlist};
use actiongate::handlers::{
    idempotency_key, CredentialProvider, Dependencies, ErrorKind, HandlerError, HandlerFuture, KycCheck, Registry,
    Secret, StepContext,
};
use actiongate::policy::Policy;
use actiongate::ports::clock::FixedClock;
use actiongate::ports::store::*;
use actiongate::services::rollback::{RollbackRequest, RollbackService};
use actiongate_local::emulator::sdk_config_for;
use actiongate_local::fakes::Fakes;
use actiongate_local::fixtures;
use actiongate_local::stack::shared_emulator;
use serde_json::{json, Value};
use std::sync::Arc;

struct FixedToken;
impl CredentialProvider for FixedToken {
    fn google_token<'a>(&'a self, _: &'a UserId) -> HandlerFuture<'a, Result<Secret, HandlerError>> {
        Box::pin(async { Ok(Secret::new("ya29.test-token")) })
    }
}

struct Kyc(bool);
impl KycCheck for Kyc {
    fn verified<'a>(&'a self, _: &'a UserId) -> HandlerFuture<'a, Result<bool, HandlerError>> {
        let v = self.0;
        Box::pin(async move { Ok(v) })
    }
}

async fn deps(fakes: &Fakes, allow: &str, kyc: bool, policy: Policy) -> Dependencies {
    let (endpoint, _) = shared_emulator();
    let sdk = sdk_config_for(&endpoint).await;
    Dependencies {
        http: reqwest::Client::new(),
        mailer: Some(Arc::new(SesMailer::new(aws_sdk_sesv2::Client::new(&sdk), "actiongate@example.com", None))),
        credentials: Arc::new(FixedToken),
        kyc: Arc::new(Kyc(kyc)),
        gmail_base: fakes.url.clone(),
        calendar_base: format!("{}/calendar/v3", fakes.url),
        drive_base: format!("{}/drive/v3", fakes.url),
        docs_base: format!("{}/docs/v1", fakes.url),
        tasks_base: format!("{}/tasks/v1", fakes.url),
        guard: Arc::new(AddressGuard::new(Allowlist::parse(allow)).expect("the guarded HTTP client builds")),
        policy: Arc::new(actiongate::services::policy_source::PolicySource::fixed(policy)),
    }
}

fn user() -> UserId {
    UserId::parse("alice").unwrap()
}

fn ctx<'a>(deps: &'a Dependencies, user: &'a UserId, payload: &'a Value, id: ActionId, step: usize) -> StepContext<'a> {
    StepContext::new(id, user, step, payload, deps)
}

fn sorted(v: &Value) -> Vec<String> {
    let mut l: Vec<String> = v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect();
    l.sort();
    l
}

async fn fake_state(fakes: &Fakes) -> Value {
    reqwest::get(format!("{}/_fake/state", fakes.url)).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn gmail_handlers_change_labels_and_rollback_restores_them_exactly() {
    let fakes = Fakes::start().unwrap();
    let deps = deps(&fakes, "", false, Policy::default_policy()).await;
    let registry = Registry::standard();
    let cases = [
        ("gmail.flag", json!({"message_id": "m-flag"}), vec!["IMPORTANT", "INBOX", "STARRED", "UNREAD"]),
        ("gmail.archive", json!({"message_id": "m-archive"}), vec!["IMPORTANT", "UNREAD"]),
        ("gmail.mark_read", json!({"message_id": "m-read"}), vec!["IMPORTANT", "INBOX"]),
        ("gmail.spam", json!({"message_id": "m-spam"}), vec!["IMPORTANT", "SPAM", "UNREAD"]),
        (
            "gmail.label",
            json!({"message_id": "m-label", "label_ids": ["Label_7", "Label_9"]}),
            vec!["IMPORTANT", "INBOX", "Label_7", "Label_9", "UNREAD"],
        ),
    ];
    let alice = user();
    for (action_type, payload, expected) in cases {
        let id = payload["message_id"].as_str().unwrap();
        fakes.seed_message(id, &["INBOX", "UNREAD", "IMPORTANT"]);
        let handler = registry.get(action_type).unwrap();
        handler.validate(&payload).unwrap();
        let c = ctx(&deps, &alice, &payload, ActionId::new_v7(chrono::Utc::now()), 0);
        let snapshot = handler.snapshot(&c).await.unwrap();
        assert_eq!(sorted(&snapshot["label_ids"]), vec!["IMPORTANT", "INBOX", "UNREAD"], "{action_type} snapshot");
        let result = handler.execute(&c).await.unwrap();
        assert_eq!(sorted(&fake_state(&fakes).await["gmail"][id]), expected, "{action_type} effect");
        // Doing it again changes nothing more (label changes are idempotent).
        handler.execute(&c).await.unwrap();
        assert_eq!(sorted(&fake_state(&fakes).await["gmail"][id]), expected, "{action_type} repeated");
        handler.rollback(&c, &snapshot, &result).await.unwrap();
        assert_eq!(
            sorted(&fake_state(&fakes).await["gmail"][id]),
            vec!["IMPORTANT", "INBOX", "UNREAD"],
            "{action_type} rollback"
        );
    }
    // A missing message is a permanent error; so is a missing token at the fake.
    let payload = json!({"message_id": "nope"});
    let c = ctx(&deps, &alice, &payload, ActionId::new_v7(chrono::Utc::now()), 0);
    let err = registry.get("gmail.archive").unwrap().execute(&c).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Permanent, "http_404"));
}

#[tokio::test]
async fn calendar_event_is_created_once_and_rollback_deletes_it() {
    let fakes = Fakes::start().unwrap();
    let deps = deps(&fakes, "", false, Policy::default_policy()).await;
    let handler = Registry::standard().get("calendar.create_event").unwrap();
    let payload = json!({"summary": "Review", "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T10:30:00Z", "attendees": ["bob@example.com"], "location": "Room 1"});
    let alice = user();
    let c = ctx(&deps, &alice, &payload, ActionId::new_v7(chrono::Utc::now()), 2);
    assert_eq!(handler.snapshot(&c).await.unwrap(), Value::Null);
    let first = handler.execute(&c).await.unwrap();
    let again = handler.execute(&c).await.unwrap();
    assert_eq!(first["event_id"], again["event_id"], "a repeated attempt finds the same event");
    let events = fake_state(&fakes).await["events"].clone();
    assert_eq!(events.as_object().unwrap().len(), 1);
    let event = events.as_object().unwrap().values().next().unwrap();
    assert_eq!(event["summary"], "Review");
    assert_eq!(event["attendees"], json!([{"email": "bob@example.com"}]));
    handler.rollback(&c, &Value::Null, &first).await.unwrap();
    assert_eq!(fake_state(&fakes).await["events"], json!({}));
    let twice = handler.rollback(&c, &Value::Null, &first).await.unwrap();
    assert_eq!(twice["already_gone"], true, "rolling back twice is harmless");
}

#[tokio::test]
async fn webhook_carries_an_idempotency_key_and_compensates_on_rollback() {
    let fakes = Fakes::start().unwrap();
    let deps = deps(&fakes, "127.0.0.1", false, Policy::default_policy()).await;
    let handler = Registry::standard().get("http_request").unwrap();
    let payload = json!({"method": "POST", "url": format!("{}/hook/ok-orders", fakes.url), "headers": {"X-Source": "agent"}, "body": {"order": 42},
                         "rollback": {"method": "DELETE", "url": format!("{}/hook/ok-orders/42", fakes.url)}});
    handler.validate(&payload).unwrap();
    let alice = user();
    let id = ActionId::new_v7(chrono::Utc::now());
    let c = ctx(&deps, &alice, &payload, id, 0);
    let result = handler.execute(&c).await.unwrap();
    assert_eq!(result["status"], 200);
    handler.execute(&c).await.unwrap();
    let state = fake_state(&fakes).await;
    assert_eq!(
        state["effects"].as_array().unwrap().len(),
        1,
        "the receiver honoured the key: one effect for two deliveries"
    );
    assert_eq!(state["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(state["effects"][0]["idempotency_key"], idempotency_key(id, 0).as_str());
    handler.rollback(&c, &Value::Null, &result).await.unwrap();
    let state = fake_state(&fakes).await;
    assert_eq!(state["effects"][1]["method"], "DELETE");
    assert_eq!(state["effects"][1]["path"], "/hook/ok-orders/42");
}

#[tokio::test]
async fn webhook_errors_are_classified_and_private_addresses_refused() {
    let fakes = Fakes::start().unwrap();
    let alice = user();
    let id = ActionId::new_v7(chrono::Utc::now());
    let local = deps(&fakes, "127.0.0.1", false, Policy::default_policy()).await;
    let handler = Registry::standard().get("http_request").unwrap();
    let call = |url: String| json!({"method": "POST", "url": url});

    let bad = call(format!("{}/hook/bad", fakes.url));
    let err = handler.execute(&ctx(&local, &alice, &bad, id, 0)).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Permanent, "http_400"));

    let flaky = call(format!("{}/hook/flaky-1", fakes.url));
    let c = ctx(&local, &alice, &flaky, id, 1);
    assert_eq!(handler.execute(&c).await.unwrap_err().kind, ErrorKind::Transient);
    assert_eq!(handler.execute(&c).await.unwrap()["status"], 200);

    let redirect = call(format!("{}/hook/redirect?to=http://169.254.169.254/latest/meta-data", fakes.url));
    let err = handler.execute(&ctx(&local, &alice, &redirect, id, 2)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");

    let closed = call(format!("{}/hook/ok", fakes.url));
    let strict = deps(&fakes, "", false, Policy::default_policy()).await;
    let err = handler.execute(&ctx(&strict, &alice, &closed, id, 3)).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Permanent, "address_refused"));
    let by_name = call(format!("{}/hook/ok", fakes.url.replace("127.0.0.1", "localhost")));
    let err = handler.execute(&ctx(&strict, &alice, &by_name, id, 4)).await.unwrap_err();
    assert!(err.message.contains("not allowed") || err.code == "connection", "{err}");
    // bad, flaky twice, and the redirecting hook itself; the refused requests never left.
    assert_eq!(fake_state(&fakes).await["deliveries"].as_array().unwrap().len(), 4);

    let unreachable = call("http://127.0.0.1:9/hook".into());
    assert_eq!(
        handler.execute(&ctx(&local, &alice, &unreachable, id, 5)).await.unwrap_err().kind,
        ErrorKind::Transient
    );
}

#[tokio::test]
async fn send_email_goes_through_ses_and_cannot_be_rolled_back() {
    let fakes = Fakes::start().unwrap();
    let deps = deps(&fakes, "", false, Policy::default_policy()).await;
    let handler = Registry::standard().get("send_email").unwrap();
    let subject = format!("Quarterly {}", ActionId::new_v7(chrono::Utc::now()));
    let payload = json!({"to": ["bob@example.com"], "cc": ["carol@example.com"], "subject": subject, "text": "Numbers attached."});
    let alice = user();
    let c = ctx(&deps, &alice, &payload, ActionId::new_v7(chrono::Utc::now()), 0);
    let result = handler.execute(&c).await.unwrap();
    assert!(result["message_id"].as_str().is_some_and(|m| !m.is_empty()));
    let (endpoint, _) = shared_emulator();
    let mail = actiongate_local::outbox::read(&reqwest::Client::new(), &endpoint).await.unwrap();
    let sent = mail.iter().find(|m| m.subject == subject).expect("the mail reached SES");
    assert_eq!(sent.text.as_deref().map(str::trim), Some("Numbers attached."));
    let err = handler.rollback(&c, &Value::Null, &result).await.unwrap_err();
    assert_eq!(err.code, "not_reversible");
    assert!(!handler.idempotent());
}

#[tokio::test]
async fn payment_handlers_refuse_unless_policy_allows() {
    let fakes = Fakes::start().unwrap();
    let alice = user();
    let registry = Registry::standard();
    let pay = json!({"amount": 5, "currency": "USD", "recipient": "acme"});
    let buy = json!({"amount": 5, "currency": "USD", "item": "stapler"});
    let deps_no_kyc = deps(&fakes, "", false, Policy::default_policy()).await;
    let id = ActionId::new_v7(chrono::Utc::now());
    let err = registry.get("make_payment").unwrap().execute(&ctx(&deps_no_kyc, &alice, &pay, id, 0)).await.unwrap_err();
    assert_eq!(err.code, "blocked");
    let err =
        registry.get("make_purchase").unwrap().execute(&ctx(&deps_no_kyc, &alice, &buy, id, 0)).await.unwrap_err();
    assert_eq!(err.code, "kyc_required");
    let deps_kyc = deps(&fakes, "", true, Policy::default_policy()).await;
    let err = registry.get("make_purchase").unwrap().execute(&ctx(&deps_kyc, &alice, &buy, id, 0)).await.unwrap_err();
    assert_eq!((err.kind, err.code.as_str()), (ErrorKind::Permanent, "no_payment_provider"));
}

#[tokio::test]
async fn rollback_restores_from_the_kept_snapshot_and_refuses_once_the_retention_has_passed() {
    let fakes = Fakes::start().unwrap();
    let deps = Arc::new(deps(&fakes, "", false, Policy::default_policy()).await);
    let store = fixtures::store().await.with_snapshot_retention(chrono::Duration::days(1));
    let archive = Registry::standard().get("gmail.archive").unwrap();
    let taken = chrono::Utc::now();
    let owner = UserId::parse(&format!("retention-{}", taken.timestamp_micros())).unwrap();
    // Two archived messages, each a completed action whose snapshot was taken at `taken`.
    let mut completed = Vec::new();
    for name in ["kept", "expired"] {
        let message = format!("m-{name}-{}", taken.timestamp_micros());
        fakes.seed_message(&message, &["INBOX", "UNREAD"]);
        let payload = json!({"message_id": message});
        let a = fixtures::action_of(&owner, Status::Queued, taken, "gmail.archive", payload.clone());
        store
            .create_action(&a, &[fixtures::event(&a, 1, None, Status::Queued)], None, &[], &[], None, taken)
            .await
            .unwrap();
        let c = ctx(&deps, &owner, &payload, a.action_id, 0);
        let mut done = a.clone();
        done.steps[0].snapshot = Some(archive.snapshot(&c).await.unwrap());
        done.steps[0].snapshot_at = Some(taken);
        done.steps[0].result = Some(archive.execute(&c).await.unwrap());
        done.steps[0].state = StepState::Completed;
        let path = [(Status::Executing, "claimed".into(), None), (Status::Completed, "done".into(), None)];
        store.advance(&a, done, &path, "test", taken).await.unwrap();
        assert_eq!(sorted(&fake_state(&fakes).await["gmail"][&message]), vec!["UNREAD"]);
        completed.push((message, a.action_id));
    }
    let at = |t| {
        RollbackService::new(
            Arc::new(store.clone()),
            Registry::standard(),
            Arc::clone(&deps),
            Arc::new(FixedClock::at(t)),
        )
    };
    let whole = RollbackRequest { reason: None, partial: false };

    // Within the retention the labels come back exactly.
    let (message, id) = &completed[0];
    let action = store.get_action(*id).await.unwrap().unwrap();
    let done = at(taken + chrono::Duration::hours(23)).roll_back(action, &whole, "test").await.unwrap();
    assert_eq!(done.status, Status::RolledBack);
    assert_eq!(sorted(&fake_state(&fakes).await["gmail"][message]), vec!["INBOX", "UNREAD"]);

    // Past it (even before DynamoDB's lazy TTL deletion) the rollback is refused and nothing
    // changes; a partial rollback leaves the step and says so.
    let (message, id) = &completed[1];
    let late = at(taken + chrono::Duration::days(1) + chrono::Duration::seconds(1));
    let action = store.get_action(*id).await.unwrap().unwrap();
    let refused = late.roll_back(action.clone(), &whole, "test").await.unwrap_err();
    assert_eq!(refused.code(), "rollback_expired");
    assert_eq!(store.get_action(*id).await.unwrap().unwrap().status, Status::Completed);
    let partial = late.roll_back(action, &RollbackRequest { reason: None, partial: true }, "test").await.unwrap();
    assert_eq!((partial.status, partial.steps[0].state), (Status::RolledBack, StepState::Completed));
    assert_eq!(sorted(&fake_state(&fakes).await["gmail"][message]), vec!["UNREAD"]);
}

/// A policy with the reference connector (in the fakes) running `ADD_AFFILIATE_LINK`, and the
/// connector's signing key in Secrets Manager (the emulator's), read through the adapter.
async fn connector_world(fakes: &Fakes, name: &str) -> (Dependencies, Registry, Policy, String) {
    let secret_name = format!("actiongate/shop-{}", ActionId::new_v7(chrono::Utc::now()));
    let key = format!("k-{}", ActionId::new_v7(chrono::Utc::now()));
    let (endpoint, _) = shared_emulator();
    let sdk = sdk_config_for(&endpoint).await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    sm.create_secret().name(&secret_name).secret_string(&key).send().await.unwrap();
    reqwest::Client::new()
        .post(format!("{}/_fake/connector", fakes.url))
        .json(&json!({"secret": key}))
        .send()
        .await
        .unwrap();
    let mut doc = serde_json::to_value(Policy::default_policy()).unwrap();
    doc["connectors"]["shop"] = json!({"url": format!("{}/connector/{name}", fakes.url), "secret": secret_name,
                                       "timeout": "PT5S", "phases": ["execute", "rollback", "validate", "preview"]});
    doc["types"]["ADD_AFFILIATE_LINK"] = json!({"tier": 1, "connector": "shop", "description": "add an affiliate link",
        "schema": {"type": "object", "required": ["page", "url"]}});
    let policy = Policy::parse_json(doc).unwrap();
    let deps = deps(fakes, "127.0.0.1", false, policy.clone()).await;
    let secrets = actiongate::adapters::aws::secrets::SecretsManager::new(sm);
    let connectors = actiongate::handlers::connector::Connectors::new(Arc::new(secrets), Arc::clone(&deps.guard));
    let registry = Registry::standard().with_declared(Arc::new(connectors));
    (deps, registry, policy, key)
}

async fn connector_log(fakes: &Fakes) -> Value {
    reqwest::get(format!("{}/_fake/connector", fakes.url)).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_connector_runs_signed_calls_replays_by_key_and_rolls_back_exactly_what_it_added() {
    let fakes = Fakes::start().unwrap();
    let (deps, registry, policy, _) = connector_world(&fakes, "shop").await;
    let handler = registry.resolve("ADD_AFFILIATE_LINK", &policy).expect("the connector runs it");
    assert!(registry.resolve("UNDECLARED", &policy).is_none());
    assert_eq!(handler.preview(&json!({})), "ADD_AFFILIATE_LINK: add an affiliate link");
    assert!(handler.idempotent());
    let u = user();
    let payload = json!({"page": "/best-pens", "url": "https://shop.example.com/pen?ref=ag"});
    let id = ActionId::new_v7(chrono::Utc::now());
    let result = handler.execute(&ctx(&deps, &u, &payload, id, 0)).await.unwrap();
    assert_eq!(result["output"]["links"], 1);
    assert_eq!(result["rollback_data"]["url"], "https://shop.example.com/pen?ref=ag");
    // A retry of the same step (same key) adds nothing.
    let again = handler.execute(&ctx(&deps, &u, &payload, id, 0)).await.unwrap();
    assert_eq!(again, result);
    let log = connector_log(&fakes).await;
    assert_eq!(log["links"]["/best-pens"].as_array().unwrap().len(), 1);
    let calls = log["calls"].as_array().unwrap();
    assert!(calls.iter().all(|c| c["verified"] == true), "every call is signed with the secret: {calls:?}");
    assert!(calls
        .iter()
        .all(|c| c["idempotency_key"] == c["key_in_body"] && c["idempotency_key"] == idempotency_key(id, 0)));
    // Another step adding the same link is refused for good, with the connector's words.
    let other = handler.execute(&ctx(&deps, &u, &payload, id, 1)).await.unwrap_err();
    assert_eq!((other.kind, other.code.as_str()), (ErrorKind::Permanent, "connector_409"));
    assert!(other.message.contains("already_linked"), "{}", other.message);
    // Rollback removes exactly the link it added, under a key of its own (a connector that
    // replays by key never answers the undo with the change's answer).
    let undone = handler.rollback(&ctx(&deps, &u, &payload, id, 0), &Value::Null, &result).await.unwrap();
    assert_eq!(undone["output"]["removed"], 1);
    let log = connector_log(&fakes).await;
    assert!(log["links"]["/best-pens"].as_array().unwrap().is_empty());
    let undo = log["calls"].as_array().unwrap().iter().find(|c| c["phase"] == "rollback").unwrap().clone();
    assert_eq!(undo["idempotency_key"], format!("{}-rollback", idempotency_key(id, 0)));
    // The handler names its target, so a retry or an undo never goes elsewhere.
    assert!(handler.pin().is_some_and(|p| p.starts_with("connector:")));
}

#[tokio::test]
async fn a_connector_s_answers_never_crash_the_step_and_say_what_to_do() {
    let fakes = Fakes::start().unwrap();
    let u = user();
    let payload = json!({"page": "/p", "url": "https://x.example.com"});
    for (name, expect) in [
        ("garbage", Ok("unparsed")),
        ("huge", Ok("unparsed")),
        ("down", Err((ErrorKind::Transient, "connector_503"))),
        ("refuse", Err((ErrorKind::Permanent, "connector_422"))),
        // A redirect is not followed: the signed call goes exactly where the policy says.
        ("redirect", Err((ErrorKind::Permanent, "connector_307"))),
        ("busy", Err((ErrorKind::Transient, "connector_429"))),
    ] {
        let (deps, registry, policy, _) = connector_world(&fakes, name).await;
        let handler = registry.resolve("ADD_AFFILIATE_LINK", &policy).unwrap();
        let id = ActionId::new_v7(chrono::Utc::now());
        let got = handler.execute(&ctx(&deps, &u, &payload, id, 0)).await;
        match (got, expect) {
            (Ok(v), Ok(key)) => assert!(v["output"].get(key).is_some(), "{name}: {v}"),
            (Err(e), Err((kind, code))) => {
                assert_eq!((e.kind, e.code.as_str()), (kind, code), "{name}: {e}");
                let asked = if name == "busy" { Some(120) } else { None };
                assert_eq!(e.retry_after_secs, asked, "{name}: Retry-After is kept");
                assert!(e.message.len() <= 600, "{name}: bounded message");
            }
            (got, expect) => panic!("{name}: {got:?} vs {expect:?}"),
        }
    }
    assert!(connector_log(&fakes).await["calls"].as_array().unwrap().iter().all(|c| c["verified"] == true));
}

#[tokio::test]
async fn a_connector_that_hangs_or_drips_is_cut_off_at_its_timeout() {
    let fakes = Fakes::start().unwrap();
    let u = user();
    let payload = json!({"page": "/p", "url": "https://x.example.com"});
    for name in ["hang", "drip"] {
        let (deps, registry, policy, _) = connector_world(&fakes, name).await;
        let mut doc = serde_json::to_value(&policy).unwrap();
        doc["connectors"]["shop"]["timeout"] = json!("PT1S");
        let policy = Policy::parse_json(doc).unwrap();
        let handler = registry.resolve("ADD_AFFILIATE_LINK", &policy).unwrap();
        let started = std::time::Instant::now();
        let e = handler.execute(&ctx(&deps, &u, &payload, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap_err();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(3), "{name}: cut off after {took:?}");
        assert_eq!((e.kind, e.code.as_str()), (ErrorKind::Transient, "timeout"), "{name}: {e}");
    }
}

#[tokio::test]
async fn a_rotated_key_is_read_again_when_the_connector_refuses_the_cached_one() {
    let fakes = Fakes::start().unwrap();
    let (deps, registry, policy, _) = connector_world(&fakes, "shop").await;
    let handler = registry.resolve("ADD_AFFILIATE_LINK", &policy).unwrap();
    let u = user();
    let id = ActionId::new_v7(chrono::Utc::now());
    let first = json!({"page": "/rotate", "url": "https://x.example.com/a"});
    handler.execute(&ctx(&deps, &u, &first, id, 0)).await.expect("signed with the first key");
    // The key is rotated in Secrets Manager and at the connector; ours is still cached.
    let rotated = format!("k2-{id}");
    let (endpoint, _) = shared_emulator();
    let sm = aws_sdk_secretsmanager::Client::new(&sdk_config_for(&endpoint).await);
    let name = policy.connectors["shop"].secret.clone();
    sm.put_secret_value().secret_id(&name).secret_string(&rotated).send().await.unwrap();
    reqwest::Client::new()
        .post(format!("{}/_fake/connector", fakes.url))
        .json(&json!({"secret": rotated}))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let second = json!({"page": "/rotate", "url": "https://x.example.com/b"});
    let done = handler.execute(&ctx(&deps, &u, &second, id, 1)).await.expect("re-signed with the rotated key");
    assert_eq!(done["output"]["links"], 2);
    let calls = connector_log(&fakes).await["calls"].as_array().unwrap().clone();
    let step_one: Vec<&Value> = calls.iter().filter(|c| c["idempotency_key"] == idempotency_key(id, 1)).collect();
    assert_eq!(step_one.len(), 2, "refused once, then accepted, with the same key: {step_one:?}");
    assert_eq!((step_one[0]["verified"].as_bool(), step_one[1]["verified"].as_bool()), (Some(false), Some(true)));
}

#[tokio::test]
async fn a_connector_with_a_wrong_or_missing_secret_is_refused() {
    let fakes = Fakes::start().unwrap();
    let (deps, registry, policy, _) = connector_world(&fakes, "shop").await;
    // The connector expects another key: its 401 is a permanent failure, never a silent success.
    reqwest::Client::new()
        .post(format!("{}/_fake/connector", fakes.url))
        .json(&json!({"secret": "other"}))
        .send()
        .await
        .unwrap();
    let handler = registry.resolve("ADD_AFFILIATE_LINK", &policy).unwrap();
    let u = user();
    let payload = json!({"page": "/p", "url": "https://x.example.com"});
    let e = handler.execute(&ctx(&deps, &u, &payload, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap_err();
    assert_eq!((e.kind, e.code.as_str()), (ErrorKind::Permanent, "connector_401"));
    // A secret that does not exist: permanent, named.
    let mut doc = serde_json::to_value(&policy).unwrap();
    doc["connectors"]["shop"]["secret"] = json!("actiongate/no-such-secret");
    let missing = Policy::parse_json(doc).unwrap();
    let handler = registry.resolve("ADD_AFFILIATE_LINK", &missing).unwrap();
    let e = handler.execute(&ctx(&deps, &u, &payload, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap_err();
    assert_eq!((e.kind, e.code.as_str()), (ErrorKind::Permanent, "secret_missing"), "{e}");
    // A connector the address guard does not allow is never called.
    let locked = deps_guarded(&fakes).await;
    let connectors = actiongate::handlers::connector::Connectors::new(
        Arc::new(actiongate::ports::memory::MemorySecrets::default()),
        Arc::clone(&locked.guard),
    );
    let handler =
        Registry::standard().with_declared(Arc::new(connectors)).resolve("ADD_AFFILIATE_LINK", &policy).unwrap();
    let before = connector_log(&fakes).await["calls"].as_array().unwrap().len();
    let e = handler.execute(&ctx(&locked, &u, &payload, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap_err();
    assert_eq!((e.kind, e.code.as_str()), (ErrorKind::Permanent, "address_refused"), "{e}");
    assert_eq!(connector_log(&fakes).await["calls"].as_array().unwrap().len(), before, "nothing reached the connector");
}

async fn deps_guarded(fakes: &Fakes) -> Dependencies {
    deps(fakes, "", false, Policy::default_policy()).await
}

/// The example policy's tier-1 types (`examples/monetization.toml`) through the reference
/// connector: each change is made once and its rollback puts back exactly what was there.
#[tokio::test]
async fn the_monetization_example_s_tier_one_types_run_and_roll_back_through_the_reference_connector() {
    let fakes = Fakes::start().unwrap();
    // The reference connector, with its key in Secrets Manager, stands in for the site.
    let (deps, registry, shop, _) = connector_world(&fakes, "shop").await;
    let text = std::fs::read_to_string(actiongate_local::workspace_root().join("examples/monetization.toml")).unwrap();
    let mut example = serde_json::to_value(Policy::parse_toml(&text).unwrap()).unwrap();
    example["connectors"]["site"] = serde_json::to_value(&shop.connectors["shop"]).unwrap();
    let policy = Policy::parse_json(example).unwrap();
    let u = user();
    let log = || connector_log(&fakes);

    let meta = registry.resolve("UPDATE_META_DESCRIPTION", &policy).expect("declared, run by the connector");
    let payload = json!({"page": "/best-pens", "description": "The pens we use"});
    let id = ActionId::new_v7(chrono::Utc::now());
    let done = meta.execute(&ctx(&deps, &u, &payload, id, 0)).await.unwrap();
    assert_eq!(log().await["meta"]["/best-pens"], "The pens we use");
    meta.rollback(&ctx(&deps, &u, &payload, id, 0), &Value::Null, &done).await.unwrap();
    assert!(log().await["meta"].get("/best-pens").is_none(), "no description before, none after");

    let add = registry.resolve("ADD_TO_COLLECTION", &policy).unwrap();
    let payload = json!({"page": "/best-pens", "collection": "gifts"});
    let id = ActionId::new_v7(chrono::Utc::now());
    let done = add.execute(&ctx(&deps, &u, &payload, id, 0)).await.unwrap();
    assert_eq!(log().await["collections"]["gifts"], json!(["/best-pens"]));
    let twice = add.execute(&ctx(&deps, &u, &payload, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap_err();
    assert_eq!(twice.code, "connector_409", "already there: {twice}");
    add.rollback(&ctx(&deps, &u, &payload, id, 0), &Value::Null, &done).await.unwrap();
    assert_eq!(log().await["collections"]["gifts"], json!([]));

    let link = registry.resolve("ADD_AFFILIATE_LINK", &policy).unwrap();
    let missing_page = json!({"page": "no-slash", "url": "https://shop.example.com/x"});
    let refused =
        link.execute(&ctx(&deps, &u, &missing_page, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap_err();
    assert_eq!((refused.kind, refused.code.as_str()), (ErrorKind::Permanent, "connector_422"));

    // GENERATE_INTERNAL_LINK_SUGGESTIONS stores suggestions (other pages the site knows); its
    // rollback takes them away again.
    let suggest = registry.resolve("GENERATE_INTERNAL_LINK_SUGGESTIONS", &policy).unwrap();
    let payload = json!({"page": "/best-pens", "max_suggestions": 3});
    let id = ActionId::new_v7(chrono::Utc::now());
    let done = suggest.execute(&ctx(&deps, &u, &payload, id, 0)).await.unwrap();
    assert_eq!(done["output"]["suggestions"], log().await["suggestions"]["/best-pens"]);
    // A second run suggests the same pages: it adds none, so its undo removes none.
    let again_id = ActionId::new_v7(chrono::Utc::now());
    let again = suggest.execute(&ctx(&deps, &u, &payload, again_id, 0)).await.unwrap();
    let (shown, kept) = suggest.keep_for_undo(again.clone());
    assert!(shown.get("rollback_data").is_none() && shown["rollback_data_kept"] == true, "{shown}");
    let undone = suggest.rollback(&ctx(&deps, &u, &payload, again_id, 0), &kept.unwrap(), &shown).await.unwrap();
    assert_eq!(undone["output"]["removed"], 0);
    assert_eq!(done["output"]["suggestions"], log().await["suggestions"]["/best-pens"], "the first run's stay");
    let (shown, kept) = suggest.keep_for_undo(done);
    let undone = suggest.rollback(&ctx(&deps, &u, &payload, id, 0), &kept.unwrap(), &shown).await.unwrap();
    assert_eq!(undone["output"]["removed"].as_u64(), shown["output"]["suggestions"].as_array().map(|a| a.len() as u64));
    assert_eq!(log().await["suggestions"]["/best-pens"], json!([]));

    // validate and preview are asked before the action exists: unsigned calls never happen,
    // the answer reflects the site now, and a refusal carries the connector's words.
    let ask = |phase, payload: &'static str| {
        let link = Arc::clone(&link);
        let u = u.clone();
        async move {
            let payload: Value = serde_json::from_str(payload).unwrap();
            let question = actiongate::ports::handler::Consultation {
                phase,
                user: &u,
                step: 0,
                payload: &payload,
                budget: std::time::Duration::from_secs(5),
            };
            let answer = link.consult(&question).expect("the connector serves it").await;
            answer
        }
    };
    use actiongate::domain::connectors::Phase;
    let fine = r#"{"page": "/gift-guide", "url": "https://shop.example.com/pen"}"#;
    assert_eq!(ask(Phase::Validate, fine).await.unwrap()["ok"], true);
    let preview = ask(Phase::Preview, fine).await.unwrap();
    assert_eq!(
        preview["preview"],
        "Add the link https://shop.example.com/pen to /gift-guide (it has 0 affiliate links now)"
    );
    // A link already on the page is refused before anything is stored.
    let placed = json!({"page": "/placed", "url": "https://shop.example.com/placed"});
    link.execute(&ctx(&deps, &u, &placed, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap();
    let twice =
        ask(Phase::Validate, r#"{"page": "/placed", "url": "https://shop.example.com/placed"}"#).await.unwrap_err();
    assert_eq!(twice.kind, ErrorKind::Permanent, "{twice}");
    assert!(twice.code.starts_with("connector_4") && twice.message.contains("already"), "{twice}");
    let missing = ask(Phase::Validate, r#"{"page": "/missing/x", "url": "https://shop.example.com/pen"}"#).await;
    let missing = missing.unwrap_err();
    assert_eq!((missing.kind, missing.code.as_str()), (ErrorKind::Permanent, "connector_422"));
    assert!(missing.message.contains("page_missing"), "{missing}");
    let calls = log().await["calls"].as_array().unwrap().clone();
    let asked: Vec<&Value> = calls.iter().filter(|c| c["phase"] == "validate" || c["phase"] == "preview").collect();
    assert_eq!(asked.len(), 4);
    assert!(asked.iter().all(|c| c["key_in_body"].is_null() && c["idempotency_key"] == ""), "{asked:?}");
    assert!(calls.iter().all(|c| c["verified"] == true));
    // A connector that does not serve a phase is not asked.
    let mut execute_only = policy.clone();
    execute_only.connectors.get_mut("site").unwrap().phases = vec![Phase::Execute];
    let plain = registry.resolve("ADD_AFFILIATE_LINK", &execute_only).unwrap();
    let payload: Value = serde_json::from_str(fine).unwrap();
    let question = actiongate::ports::handler::Consultation {
        phase: Phase::Preview,
        user: &u,
        step: 0,
        payload: &payload,
        budget: std::time::Duration::from_secs(5),
    };
    assert!(plain.consult(&question).is_none());
}

fn google(fakes: &Fakes) -> std::sync::MutexGuard<'_, actiongate_local::fakes::FakeState> {
    fakes.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// `gmail.reply` and `gmail.forward` send through `users.messages.send` (threaded, headers
/// built safely); forwarding outside the allowed domains is refused before anything is sent;
/// neither can be undone.
#[tokio::test]
async fn gmail_reply_and_forward_send_threaded_mail_and_forwarding_keeps_to_allowed_domains() {
    let fakes = Fakes::start().unwrap();
    fakes.seed_message("orig-1", &["INBOX"]);
    let deps = deps(&fakes, "", false, Policy::default_policy()).await;
    let registry = Registry::standard();
    let u = user();

    let reply = registry.get("gmail.reply").unwrap();
    let payload = json!({"message_id": "orig-1", "text": "Thanks, Thursday works.", "cc": ["boss@example.com"]});
    assert!(reply.validate(&payload).is_ok());
    let done = reply.execute(&ctx(&deps, &u, &payload, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap();
    let sent = google(&fakes).google.sent.clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let mail = &sent[0];
    assert_eq!(mail["to"], "sender-orig-1@example.com", "{mail}");
    assert_eq!(mail["subject"], "Re: Subject orig-1");
    assert_eq!(mail["headers"]["In-Reply-To"], "<orig-1@mail.example>", "{mail}");
    assert!(mail["text"].as_str().unwrap().contains("Thursday works"));
    assert!(done.to_string().contains(mail["id"].as_str().unwrap()), "{done}");
    assert_eq!(reply.reversibility(&payload), actiongate::handlers::Reversibility::Irreversible);
    // Header injection through the text is impossible (it is the body); through a reply to a
    // missing message nothing is sent.
    let missing = json!({"message_id": "nope", "text": "x"});
    let e = reply.execute(&ctx(&deps, &u, &missing, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert_eq!(google(&fakes).google.sent.len(), 1);

    let forward = registry.get("gmail.forward").unwrap();
    let outside = json!({"message_id": "orig-1", "to": ["ally@example.com", "leak@evil.test"], "text": "FYI"});
    let e = forward.execute(&ctx(&deps, &u, &outside, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap_err();
    assert_eq!((e.kind, e.code.as_str()), (ErrorKind::Permanent, "domain_not_allowed"), "{e}");
    assert!(e.message.contains("payload.to[1]"), "{e}");
    assert_eq!(google(&fakes).google.sent.len(), 1, "nothing was sent");
    let inside = json!({"message_id": "orig-1", "to": ["finance@ops.example.com"], "text": "FYI"});
    forward.execute(&ctx(&deps, &u, &inside, ActionId::new_v7(chrono::Utc::now()), 0)).await.unwrap();
    let sent = google(&fakes).google.sent.clone();
    let fwd = &sent[1];
    assert_eq!(fwd["subject"], "Fwd: Subject orig-1", "{fwd}");
    assert_eq!(fwd["forwarded"]["subject"], "Subject orig-1", "the original travels along: {fwd}");
}

/// `drive.move_file` moves a file and its rollback puts it back exactly; `docs.create_document`
/// and `tasks.create` create once per step (a retry finds what the first attempt made) and
/// their rollbacks trash or delete exactly that.
#[tokio::test]
async fn drive_docs_and_tasks_change_once_and_roll_back_exactly() {
    let fakes = Fakes::start().unwrap();
    google(&fakes).google.seed_folder("inbox-folder", "Inbox", &[]);
    google(&fakes).google.seed_folder("archive-folder", "Archive", &[]);
    google(&fakes).google.seed_file("file-1", "report.pdf", &["inbox-folder"]);
    let deps = deps(&fakes, "", false, Policy::default_policy()).await;
    let registry = Registry::standard();
    let u = user();

    let mv = registry.get("drive.move_file").unwrap();
    let payload = json!({"file_id": "file-1", "to_folder_id": "archive-folder"});
    let id = ActionId::new_v7(chrono::Utc::now());
    let c = ctx(&deps, &u, &payload, id, 0);
    let snapshot = mv.snapshot(&c).await.unwrap();
    let result = mv.execute(&c).await.unwrap();
    assert_eq!(google(&fakes).google.files["file-1"].parents, vec!["archive-folder"]);
    mv.execute(&c).await.unwrap();
    assert_eq!(google(&fakes).google.files["file-1"].parents, vec!["archive-folder"], "a repeat changes nothing");
    mv.rollback(&c, &snapshot, &result).await.unwrap();
    assert_eq!(google(&fakes).google.files["file-1"].parents, vec!["inbox-folder"], "back where it was");

    let doc = registry.get("docs.create_document").unwrap();
    let payload = json!({"title": "Meeting notes", "text": "Agenda: pens."});
    let id = ActionId::new_v7(chrono::Utc::now());
    let c = ctx(&deps, &u, &payload, id, 0);
    let first = doc.execute(&c).await.unwrap();
    let again = doc.execute(&c).await.unwrap();
    let doc_id = first["document_id"].as_str().unwrap().to_owned();
    assert_eq!(again["document_id"], first["document_id"], "a retry of the step finds the document: {again}");
    assert_eq!(google(&fakes).google.docs.len(), 1);
    assert_eq!(google(&fakes).google.docs[&doc_id], "Agenda: pens.", "the text is in once");
    doc.rollback(&c, &Value::Null, &first).await.unwrap();
    assert!(google(&fakes).google.files[&doc_id].trashed, "rollback trashes it");

    let task = registry.get("tasks.create").unwrap();
    let payload = json!({"title": "Call the printer", "notes": "About the brochure", "due": "2026-12-03T00:00:00Z"});
    let id = ActionId::new_v7(chrono::Utc::now());
    let c = ctx(&deps, &u, &payload, id, 0);
    let made = task.execute(&c).await.unwrap();
    task.execute(&c).await.unwrap();
    assert_eq!(google(&fakes).google.tasks.len(), 1, "created once");
    let other = ctx(&deps, &u, &payload, ActionId::new_v7(chrono::Utc::now()), 0);
    task.execute(&other).await.unwrap();
    assert_eq!(google(&fakes).google.tasks.len(), 2, "another step is another task");
    task.rollback(&c, &Value::Null, &made).await.unwrap();
    assert_eq!(google(&fakes).google.tasks.len(), 1, "rollback deletes exactly its task");
    let gone = task.rollback(&c, &Value::Null, &made).await.unwrap();
    assert_eq!(gone["changed"], false, "{gone}");
    for (t, name) in [("drive.move_file", "drive"), ("docs.create_document", "docs"), ("tasks.create", "tasks")] {
        assert_eq!(registry.get(t).unwrap().integration(&Value::Null).as_deref(), Some(name));
    }
}
