//! The adapter suite: the same checks against both implementations of the store port — the
//! DynamoDB store on the emulator (real SDK, tables provisioned from the SAM template) and the
//! in-memory store the services' unit tests use — so the fake cannot drift from the real one.
//! Each check is one generic function; `both!` runs it once per implementation.

use actiongate::adapters::aws::dynamo::DynamoStore;
use actiongate::adapters::aws::sqs::SqsQueue;
use actiongate::domain::guards::CounterSpec;
use actiongate::domain::{ActionId, IdempotencyKey, Status, UserId};
use actiongate::policy::{RateLimit, Window};
use actiongate::ports::memory::MemoryStore;
use actiongate::ports::queue::{ExecuteMessage, WorkQueue};
use actiongate::ports::store::*;
use actiongate_local::emulator::sdk_config_for;
use actiongate_local::fixtures::{action, event, store};
use actiongate_local::stack::shared_emulator;
use chrono::{Duration, Utc};
use serde_json::json;
use std::sync::Arc;

fn user(name: &str) -> UserId {
    UserId::parse(&format!("{name}-{}", uuid_suffix())).unwrap()
}

fn uuid_suffix() -> String {
    ActionId::new_v7(Utc::now()).to_string()[24..].to_owned()
}

async fn created_action_reads_back_with_its_trail(store: Arc<dyn Store>) {
    let owner = user("alice");
    let a = action(&owner, Status::Queued, Utc::now());
    store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], None, None, Utc::now()).await.unwrap();
    assert_eq!(store.get_action(a.action_id).await.unwrap(), Some(a.clone()));
    let trail = store.audit_trail(a.action_id).await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].to, Status::Queued);
    assert_eq!(store.get_action(ActionId::new_v7(Utc::now())).await.unwrap(), None);
}

async fn transition_is_conditional_on_version_and_state(store: Arc<dyn Store>) {
    let owner = user("bob");
    let a = action(&owner, Status::Queued, Utc::now());
    store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], None, None, Utc::now()).await.unwrap();

    let mut cancelled = a.clone();
    cancelled.status = Status::Cancelled;
    cancelled.version = 2;
    store.transition(&a, &cancelled, &event(&a, 2, Some(Status::Queued), Status::Cancelled)).await.unwrap();

    // A second writer that read version 1 loses, and its audit event is not written either.
    let mut executing = a.clone();
    executing.status = Status::Executing;
    executing.version = 2;
    let lost = store.transition(&a, &executing, &event(&a, 3, Some(Status::Queued), Status::Executing)).await;
    assert!(matches!(lost, Err(TransitionError::Conflict)), "{lost:?}");
    let trail = store.audit_trail(a.action_id).await.unwrap();
    assert_eq!(trail.iter().map(|e| e.to).collect::<Vec<_>>(), vec![Status::Queued, Status::Cancelled]);
    assert_eq!(store.get_action(a.action_id).await.unwrap().unwrap().status, Status::Cancelled);
}

async fn audit_events_cannot_be_overwritten(store: Arc<dyn Store>) {
    let owner = user("carol");
    let a = action(&owner, Status::Queued, Utc::now());
    store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], None, None, Utc::now()).await.unwrap();
    let mut next = a.clone();
    next.version = 2;
    next.status = Status::Cancelled;
    // Reusing seq 1 must fail the whole transaction, leaving the action untouched.
    let err = store.transition(&a, &next, &event(&a, 1, Some(Status::Queued), Status::Cancelled)).await;
    assert!(matches!(err, Err(TransitionError::Conflict)));
    assert_eq!(store.get_action(a.action_id).await.unwrap().unwrap().status, Status::Queued);
    assert_eq!(store.audit_trail(a.action_id).await.unwrap()[0].to, Status::Queued);
}

async fn listing_is_newest_first_paged_and_filtered_by_status(store: Arc<dyn Store>) {
    let owner = user("dave");
    let t0 = Utc::now();
    let mut ids = Vec::new();
    for i in 0..5 {
        let status = if i % 2 == 0 { Status::Queued } else { Status::Manual };
        let a = action(&owner, status, t0 + Duration::milliseconds(i * 10));
        store.create_action(&a, &[event(&a, 1, None, status)], None, &[], None, None, t0).await.unwrap();
        ids.push(a.action_id);
    }
    let first = store.list_actions(&owner, None, 2, None).await.unwrap().unwrap();
    assert_eq!(first.actions.iter().map(|a| a.action_id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
    let cursor = first.next_cursor.expect("more pages");
    let second = store.list_actions(&owner, None, 2, Some(&cursor)).await.unwrap().unwrap();
    assert_eq!(second.actions.iter().map(|a| a.action_id).collect::<Vec<_>>(), vec![ids[2], ids[1]]);
    let queued = store.list_actions(&owner, Some(Status::Queued), 10, None).await.unwrap().unwrap();
    assert_eq!(queued.actions.iter().map(|a| a.action_id).collect::<Vec<_>>(), vec![ids[4], ids[2], ids[0]]);
    // A cursor from one user's listing is refused for another user.
    let other = user("eve");
    assert!(store.list_actions(&other, None, 2, Some(&cursor)).await.unwrap().is_err());
    assert!(store.list_actions(&owner, None, 2, Some("garbage")).await.unwrap().is_err());
}

async fn idempotency_key_is_single_use(store: Arc<dyn Store>) {
    let owner = user("frank");
    let key = IdempotencyKey::parse("order-1").unwrap();
    let a = action(&owner, Status::Queued, Utc::now());
    store
        .create_action(&a, &[event(&a, 1, None, Status::Queued)], Some((&key, "hash-a")), &[], None, None, Utc::now())
        .await
        .unwrap();
    let record = store.get_idempotency(&owner, &key, Utc::now()).await.unwrap().unwrap();
    assert_eq!(record.action_id, a.action_id);
    assert_eq!(record.body_sha256, "hash-a");
    let b = action(&owner, Status::Queued, Utc::now());
    let err = store
        .create_action(&b, &[event(&b, 1, None, Status::Queued)], Some((&key, "hash-b")), &[], None, None, Utc::now())
        .await;
    assert!(matches!(err, Err(CreateError::IdempotencyKeyUsed)), "{err:?}");
    assert_eq!(store.get_action(b.action_id).await.unwrap(), None, "the losing action must not be stored");
}

async fn an_idempotency_key_past_its_lifetime_is_forgotten_on_read_and_reusable(store: Arc<dyn Store>) {
    let owner = user("ivan");
    let key = IdempotencyKey::parse("order-old").unwrap();
    let long_ago = Utc::now() - Duration::days(8);
    let a = action(&owner, Status::Queued, long_ago);
    store
        .create_action(&a, &[event(&a, 1, None, Status::Queued)], Some((&key, "hash-a")), &[], None, None, long_ago)
        .await
        .unwrap();
    // TTL deletion is lazy: the item is still there, but its lifetime is over.
    assert!(store.get_idempotency(&owner, &key, long_ago).await.unwrap().is_some());
    assert_eq!(store.get_idempotency(&owner, &key, Utc::now()).await.unwrap(), None);
    let b = action(&owner, Status::Queued, Utc::now());
    store
        .create_action(&b, &[event(&b, 1, None, Status::Queued)], Some((&key, "hash-b")), &[], None, None, Utc::now())
        .await
        .expect("an expired key can be used again");
    assert_eq!(store.get_idempotency(&owner, &key, Utc::now()).await.unwrap().unwrap().action_id, b.action_id);
}

async fn a_request_that_can_never_fit_is_refused_even_on_a_fresh_window(store: Arc<dyn Store>) {
    let owner = user("judy");
    let now = Utc::now();
    let limit = RateLimit { window: Window::Hour, limit: 2 };
    let a = action(&owner, Status::AwaitingApproval, now);
    let err = store
        .create_action(
            &a,
            &[event(&a, 1, None, a.status)],
            None,
            &[CounterSpec::at(format!("{owner}#send_email"), "send_email", limit, 3, now)],
            None,
            None,
            now,
        )
        .await;
    assert!(matches!(err, Err(CreateError::RateLimited(0))), "{err:?}");
    assert_eq!(store.get_action(a.action_id).await.unwrap(), None);
    let zero = RateLimit { window: Window::Hour, limit: 0 };
    let b = action(&owner, Status::Queued, now);
    store.create_action(&b, &[event(&b, 1, None, b.status)], None, &[], None, None, now).await.unwrap();
    let err = store
        .advance_guarded(
            &b,
            b.clone(),
            &[(Status::Executing, "start".into(), None)],
            "test",
            now,
            &[CounterSpec::at(format!("auto#user#{owner}"), "automatic execution", zero, 1, now)],
            None,
            false,
        )
        .await;
    assert!(matches!(err, Err(actiongate::ports::store::GuardError::CounterFull(0))), "{err:?}");
}

#[tokio::test]
async fn one_unreadable_item_never_fails_a_listing_or_the_due_index() {
    let store = store().await;
    let owner = user("mallory");
    let now = Utc::now();
    let good = action(&owner, Status::Queued, now - Duration::minutes(30));
    store.create_action(&good, &[event(&good, 1, None, Status::Queued)], None, &[], None, None, now).await.unwrap();
    // An item whose document no reader can parse (as a 130-level payload once was).
    let bad = action(&owner, Status::Queued, now - Duration::minutes(20));
    let deep = "[".repeat(130) + &"]".repeat(130);
    let item = [
        ("pk", format!("ACTION#{}", bad.action_id)),
        ("sk", "ACTION".to_owned()),
        ("gsi1pk", format!("USER#{owner}")),
        ("gsi1sk", bad.action_id.to_string()),
        ("gsi2pk", format!("USER#{owner}#queued")),
        ("gsi2sk", bad.action_id.to_string()),
        ("due_pk", "DUE#queued".to_owned()),
        ("due_sk", format!("{}#{}", actiongate::domain::time::format_time(now - Duration::minutes(10)), bad.action_id)),
        ("status", "queued".to_owned()),
        ("doc", format!("{{\"payload\": {deep}}}")),
    ];
    let mut put = store.client().put_item().table_name(actiongate_local::fixtures::actions_table());
    for (k, v) in item {
        put = put.item(k, aws_sdk_dynamodb::types::AttributeValue::S(v));
    }
    put.send().await.unwrap();
    let page = store.list_actions(&owner, None, 10, None).await.unwrap().unwrap();
    assert_eq!(page.actions.iter().map(|a| a.action_id).collect::<Vec<_>>(), vec![good.action_id]);
    let queued = store.list_actions(&owner, Some(Status::Queued), 10, None).await.unwrap().unwrap();
    assert_eq!(queued.actions.len(), 1);
    let due = store.due(Status::Queued, now, 100).await.unwrap();
    assert!(due.iter().all(|a| a.action_id != bad.action_id));
}

async fn rate_counters_are_exact_under_concurrency(store: Arc<dyn Store>) {
    let owner = user("grace");
    let now = Utc::now();
    let limit = RateLimit { window: Window::Hour, limit: 10 };
    let attempts = (0..30).map(|_| {
        let store = store.clone();
        let owner = owner.clone();
        async move {
            let a = action(&owner, Status::AwaitingApproval, Utc::now());
            let counters = [CounterSpec::at(format!("{owner}#send_email"), "send_email", limit, 1, now)];
            store.create_action(&a, &[event(&a, 1, None, a.status)], None, &counters, None, None, now).await
        }
    });
    let results = futures_join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited = results.iter().filter(|r| matches!(r, Err(CreateError::RateLimited(0)))).count();
    assert_eq!((ok, limited), (10, 20), "{results:?}");
    let used = store
        .counter_usage(&[CounterSpec::at(format!("{owner}#send_email"), "send_email", limit, 1, now)])
        .await
        .unwrap();
    assert_eq!(used, vec![10]);
    let stored = store.list_actions(&owner, None, 100, None).await.unwrap().unwrap();
    assert_eq!(stored.actions.len(), 10, "rate-limited creations must store nothing");
}

async fn a_request_larger_than_what_is_left_is_refused_whole(store: Arc<dyn Store>) {
    let owner = user("heidi");
    let now = Utc::now();
    let limit = RateLimit { window: Window::Day, limit: 3 };
    let a = action(&owner, Status::AwaitingApproval, now);
    store
        .create_action(
            &a,
            &[event(&a, 1, None, a.status)],
            None,
            &[CounterSpec::at(format!("{owner}#send_email"), "send_email", limit, 2, now)],
            None,
            None,
            now,
        )
        .await
        .unwrap();
    let b = action(&owner, Status::AwaitingApproval, now);
    let err = store
        .create_action(
            &b,
            &[event(&b, 1, None, b.status)],
            None,
            &[CounterSpec::at(format!("{owner}#send_email"), "send_email", limit, 2, now)],
            None,
            None,
            now,
        )
        .await;
    assert!(matches!(err, Err(CreateError::RateLimited(0))));
    assert_eq!(
        store
            .counter_usage(&[CounterSpec::at(format!("{owner}#send_email"), "send_email", limit, 1, now)])
            .await
            .unwrap(),
        vec![2]
    );
}

async fn kyc_flag_defaults_off_and_can_be_set(store: Arc<dyn Store>) {
    let owner = user("ivan");
    assert!(!store.kyc_verified(&owner).await.unwrap());
    store.set_kyc_verified(&owner, true, "admin", Utc::now()).await.unwrap();
    assert!(store.kyc_verified(&owner).await.unwrap());
}

#[tokio::test]
async fn queue_carries_execute_messages() {
    let (endpoint, provisioned) = shared_emulator();
    let sdk = sdk_config_for(&endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    // A queue of its own, so other tests' messages do not interfere.
    let url =
        sqs.create_queue().queue_name(format!("adapter-{}", uuid_suffix())).send().await.unwrap().queue_url.unwrap();
    let _ = provisioned;
    let queue = SqsQueue::new(sqs.clone(), &url);
    let message = ExecuteMessage { action_id: ActionId::new_v7(Utc::now()), step: 0 };
    queue.enqueue(&message, 0).await.unwrap();
    let received = sqs.receive_message().queue_url(&url).wait_time_seconds(1).send().await.unwrap();
    let body = received.messages()[0].body().unwrap();
    assert_eq!(serde_json::from_str::<ExecuteMessage>(body).unwrap(), message);
}

async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}

async fn a_snapshot_lives_in_its_own_item_for_the_retention_and_is_written_once(store: Arc<dyn Store>) {
    let now = Utc::now();
    let a = action(&user("snap"), Status::Queued, now);
    store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], None, None, now).await.unwrap();
    assert!(store.snapshots(a.action_id).await.unwrap().is_empty());

    let mut claimed = a.clone();
    claimed.steps[0].snapshot = Some(json!({"label_ids": ["INBOX"]}));
    claimed.steps[0].snapshot_at = Some(now);
    store.advance(&a, claimed, &[(Status::Executing, "claimed".into(), None)], "test", now).await.unwrap();
    let kept = store.snapshots(a.action_id).await.unwrap();
    assert_eq!(kept.keys().copied().collect::<Vec<_>>(), vec![0]);
    assert_eq!(kept[&0].snapshot, json!({"label_ids": ["INBOX"]}));
    assert_eq!(kept[&0].expires_at.timestamp(), (now + Duration::days(7)).timestamp(), "TTL = taken + retention");

    // The action's document records when, not what: the TTL can remove the data on its own.
    let stored = store.get_action(a.action_id).await.unwrap().unwrap();
    assert_eq!((stored.steps[0].snapshot.clone(), stored.steps[0].snapshot_at), (None, Some(now)));
    // Later writes of the action leave the snapshot as first taken.
    let mut later = stored.clone();
    later.steps[0].snapshot = Some(json!({"label_ids": []}));
    store.advance(&stored, later, &[(Status::Queued, "retry".into(), None)], "test", now).await.unwrap();
    assert_eq!(store.snapshots(a.action_id).await.unwrap()[&0].snapshot, json!({"label_ids": ["INBOX"]}));
}

async fn automatic_successes_ride_in_the_steps_write_and_the_next_failure_folds_them(store: Arc<dyn Store>) {
    use actiongate::breaker::BreakerSettings;
    // Settings that never open it: other tests of this binary create tier-1 work, which an
    // open breaker would hold.
    let settings = BreakerSettings { window: 50, min_sample: 1000, consecutive_failures: 1000, failure_ratio: 1.0 };
    let succeed = |owner: UserId| {
        let store = store.clone();
        async move {
            let now = Utc::now();
            let a = action(&owner, Status::Queued, now);
            store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], None, None, now).await.unwrap();
            let running = store
                .advance(&a, a.clone(), &[(Status::Executing, "claimed".into(), None)], "test", now)
                .await
                .unwrap();
            let path = [(Status::Completed, "done".into(), None)];
            store.advance_counting(&running, running.clone(), &path, "test", now, true).await.unwrap();
        }
    };
    let before = store.breaker(settings.window).await.unwrap();
    succeed(user("ok")).await;
    succeed(user("ok")).await;
    let mut seen = store.breaker(settings.window).await.unwrap();
    assert_eq!(seen.absorbed, before.absorbed + 2, "each success counted once, with no write of its own");
    assert!(seen.recent.ends_with(&[true, true]) && seen.consecutive_failures == 0, "{seen:?}");

    // A failure is read-modify-write; a success counted meanwhile survives its save.
    let version = seen.version;
    assert_eq!(seen.record(false, &settings, Utc::now()), None);
    seen.version += 1;
    succeed(user("ok")).await;
    store.save_breaker(version, &seen, None, Utc::now()).await.unwrap();
    let after = store.breaker(settings.window).await.unwrap();
    assert_eq!(after.absorbed, 1, "only the success counted after the read is still on the item");
    assert!(after.recent.ends_with(&[true, true, false, true]), "{after:?}");
    assert_eq!((after.version, after.consecutive_failures), (version + 1, 0));
    // A save from a stale read is refused.
    assert!(matches!(store.save_breaker(version, &seen, None, Utc::now()).await, Err(TransitionError::Conflict)));
}

/// Runs each check against DynamoDB (`dynamo::…`) and memory (`memory::…`), optionally
/// configuring each store first.
macro_rules! both {
    ($($name:ident $(: $dynamo:expr, $memory:expr)?;)*) => {
        mod dynamo {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let store = store().await;
                    $(let store = ($dynamo)(store);)?
                    super::$name(Arc::new(store)).await
                }
            )*
        }
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let store = MemoryStore::new();
                    $(let store = ($memory)(store);)?
                    super::$name(Arc::new(store)).await
                }
            )*
        }
    };
}

both! {
    created_action_reads_back_with_its_trail;
    transition_is_conditional_on_version_and_state;
    audit_events_cannot_be_overwritten;
    listing_is_newest_first_paged_and_filtered_by_status;
    idempotency_key_is_single_use;
    an_idempotency_key_past_its_lifetime_is_forgotten_on_read_and_reusable;
    a_request_that_can_never_fit_is_refused_even_on_a_fresh_window;
    rate_counters_are_exact_under_concurrency;
    a_request_larger_than_what_is_left_is_refused_whole;
    kyc_flag_defaults_off_and_can_be_set;
    automatic_successes_ride_in_the_steps_write_and_the_next_failure_folds_them;
    a_snapshot_lives_in_its_own_item_for_the_retention_and_is_written_once: |s: DynamoStore| s.with_snapshot_retention(Duration::days(7)), |s: MemoryStore| s.with_snapshot_retention(Duration::days(7));
}
