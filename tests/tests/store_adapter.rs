//! The adapter suite: the same checks against both implementations of the store port — the
//! DynamoDB store on the emulator (real SDK, tables provisioned from the SAM template) and the
//! in-memory store the services' unit tests use — so the fake cannot drift from the real one.
//! Each check is one generic function; `both!` runs it once per implementation (`isolated`:
//! DynamoDB on tables of its own, for the store's single items and its indexes).

use actiongate::adapters::aws::dynamo::DynamoStore;
use actiongate::adapters::aws::sqs::SqsQueue;
use actiongate::domain::approval::{issue_link, ApprovalStatus, ApprovalUse};
use actiongate::domain::breaker::{Breaker, BreakerStatus};
use actiongate::domain::guards::Cooldown;
use actiongate::domain::guards::CounterSpec;
use actiongate::domain::{ActionId, IdempotencyKey, Status, UserId};
use actiongate::domain::{EmailAddress, Tier};
use actiongate::policy::{RateLimit, Window};
use actiongate::ports::memory::MemoryStore;
use actiongate::ports::queue::{ExecuteMessage, WorkQueue};
use actiongate::ports::store::*;
use actiongate_local::emulator::sdk_config_for;
use actiongate_local::fixtures::{action, event, isolated_store, store};
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
    store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], &[], None, Utc::now()).await.unwrap();
    assert_eq!(store.get_action(a.action_id).await.unwrap(), Some(a.clone()));
    let trail = store.audit_trail(a.action_id).await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].to, Status::Queued);
    assert_eq!(store.get_action(ActionId::new_v7(Utc::now())).await.unwrap(), None);
}

async fn transition_is_conditional_on_version_and_state(store: Arc<dyn Store>) {
    let owner = user("bob");
    let a = action(&owner, Status::Queued, Utc::now());
    store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], &[], None, Utc::now()).await.unwrap();

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
    store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], &[], None, Utc::now()).await.unwrap();
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
        store.create_action(&a, &[event(&a, 1, None, status)], None, &[], &[], None, t0).await.unwrap();
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
        .create_action(&a, &[event(&a, 1, None, Status::Queued)], Some((&key, "hash-a")), &[], &[], None, Utc::now())
        .await
        .unwrap();
    let record = store.get_idempotency(&owner, &key, Utc::now()).await.unwrap().unwrap();
    assert_eq!(record.action_id, a.action_id);
    assert_eq!(record.body_sha256, "hash-a");
    let b = action(&owner, Status::Queued, Utc::now());
    let err = store
        .create_action(&b, &[event(&b, 1, None, Status::Queued)], Some((&key, "hash-b")), &[], &[], None, Utc::now())
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
        .create_action(&a, &[event(&a, 1, None, Status::Queued)], Some((&key, "hash-a")), &[], &[], None, long_ago)
        .await
        .unwrap();
    // TTL deletion is lazy: the item is still there, but its lifetime is over.
    assert!(store.get_idempotency(&owner, &key, long_ago).await.unwrap().is_some());
    assert_eq!(store.get_idempotency(&owner, &key, Utc::now()).await.unwrap(), None);
    let b = action(&owner, Status::Queued, Utc::now());
    store
        .create_action(&b, &[event(&b, 1, None, Status::Queued)], Some((&key, "hash-b")), &[], &[], None, Utc::now())
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
            &[],
            None,
            now,
        )
        .await;
    assert!(matches!(err, Err(CreateError::RateLimited(0))), "{err:?}");
    assert_eq!(store.get_action(a.action_id).await.unwrap(), None);
    let zero = RateLimit { window: Window::Hour, limit: 0 };
    let b = action(&owner, Status::Queued, now);
    store.create_action(&b, &[event(&b, 1, None, b.status)], None, &[], &[], None, now).await.unwrap();
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
    store.create_action(&good, &[event(&good, 1, None, Status::Queued)], None, &[], &[], None, now).await.unwrap();
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
            store.create_action(&a, &[event(&a, 1, None, a.status)], None, &counters, &[], None, now).await
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
            &[],
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
            &[],
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
    let message = ExecuteMessage::step(ActionId::new_v7(Utc::now()), 0);
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
    store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], &[], None, now).await.unwrap();
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
    let settings = BreakerSettings {
        window: 50,
        min_sample: 1000,
        consecutive_failures: 1000,
        failure_ratio: 1.0,
        ..Default::default()
    };
    let succeed = |owner: UserId| {
        let store = store.clone();
        async move {
            let now = Utc::now();
            let a = action(&owner, Status::Queued, now);
            store.create_action(&a, &[event(&a, 1, None, Status::Queued)], None, &[], &[], None, now).await.unwrap();
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

async fn approval_links_are_stored_used_once_and_replaced(store: Arc<dyn Store>) {
    let now = Utc::now();
    let mut a = action(&user("links"), Status::AwaitingApproval, now);
    a.tier = Some(Tier::Approval);
    let approver = EmailAddress::parse("boss@example.com").unwrap();
    let (_, first) = issue_link(&a, &approver, now + Duration::hours(1));
    a.approval_token_hash = Some(first.token_hash.clone());
    store
        .create_action(&a, &[event(&a, 1, None, a.status)], None, &[], std::slice::from_ref(&first), None, now)
        .await
        .unwrap();
    let read = store.get_approval(&first.token_hash).await.unwrap().unwrap();
    assert_eq!(
        (read.status, read.approver.as_str(), read.plan_digest.as_str(), read.round, read.expires_at.timestamp()),
        (ApprovalStatus::Pending, "boss@example.com", first.plan_digest.as_str(), 0, first.expires_at.timestamp())
    );
    assert_eq!(store.get_approval("no-such-hash").await.unwrap(), None);
    // A new link closes the old one, with the action's write.
    let mut relinked = a.clone();
    relinked.version = a.version + 1;
    let (_, second) = issue_link(&a, &approver, now + Duration::hours(2));
    relinked.approval_token_hash = Some(second.token_hash.clone());
    let closing = ApprovalUse { token_hash: &first.token_hash, status: ApprovalStatus::Closed, by: "sweep", at: now };
    store.reissue_link(&a, &relinked, None, std::slice::from_ref(&second), Some(closing.clone())).await.unwrap();
    assert_eq!(store.get_approval(&first.token_hash).await.unwrap().unwrap().status, ApprovalStatus::Closed);
    // The same link twice, or a stale action: nothing is written.
    let again = store.reissue_link(&relinked, &relinked, None, std::slice::from_ref(&second), None).await;
    assert!(matches!(again, Err(TransitionError::Conflict)), "{again:?}");
    // A decision uses the new link up, once.
    let mut decided = relinked.clone();
    decided.status = Status::Rejected;
    decided.version = relinked.version + 1;
    let rejected = event(&relinked, decided.version, Some(Status::AwaitingApproval), Status::Rejected);
    let using = ApprovalUse { token_hash: &second.token_hash, status: ApprovalStatus::Rejected, by: "boss", at: now };
    store.transition_many(&relinked, &decided, &[rejected], Some(using.clone())).await.unwrap();
    let used = store.get_approval(&second.token_hash).await.unwrap().unwrap();
    assert_eq!((used.status, used.decided_by.as_deref()), (ApprovalStatus::Rejected, Some("boss")));
    assert_eq!(used.decided_at.map(|t| t.timestamp()), Some(now.timestamp()));
    let mut rolled = decided.clone();
    rolled.status = Status::RollingBack;
    rolled.version = decided.version + 1;
    let hop = event(&decided, rolled.version, Some(Status::Rejected), Status::RollingBack);
    assert!(matches!(
        store.transition_many(&decided, &rolled, &[hop], Some(using)).await,
        Err(TransitionError::Conflict)
    ));
    assert_eq!(store.get_action(a.action_id).await.unwrap().unwrap().status, Status::Rejected, "all or nothing");
}

async fn a_cool_down_holds_the_entity_except_for_the_action_that_took_it(store: Arc<dyn Store>) {
    let now = Utc::now();
    let owner = user("cool");
    let cool = |id: ActionId, until| Cooldown { user: owner.clone(), entity: "thread-1".into(), until, action_id: id };
    let a = action(&owner, Status::Queued, now);
    let ours = cool(a.action_id, now + Duration::minutes(1));
    store.create_action(&a, &[event(&a, 1, None, a.status)], None, &[], &[], Some(&ours), now).await.unwrap();
    let b = action(&owner, Status::Queued, now);
    let theirs = cool(b.action_id, now + Duration::minutes(1));
    let refused = store.create_action(&b, &[event(&b, 1, None, b.status)], None, &[], &[], Some(&theirs), now).await;
    assert!(matches!(refused, Err(CreateError::CoolingDown)), "{refused:?}");
    assert_eq!(store.get_action(b.action_id).await.unwrap(), None);
    // The action that took it is never stopped by its own cool-down (held, then restarted).
    let hop = [(Status::Pending, "held".to_owned(), None)];
    let held = store.advance_guarded(&a, a.clone(), &hop, "sweep", now, &[], Some(&ours), false).await.unwrap();
    assert_eq!(held.status, Status::Pending);
    // Once it has ended, another action takes it.
    let later = now + Duration::minutes(2);
    let c = action(&owner, Status::Queued, later);
    let next = cool(c.action_id, later + Duration::minutes(1));
    store.create_action(&c, &[event(&c, 1, None, c.status)], None, &[], &[], Some(&next), later).await.unwrap();
}

async fn automatic_work_is_refused_while_the_breaker_is_open_and_a_reused_key_is_told_first(store: Arc<dyn Store>) {
    let now = Utc::now();
    let owner = user("breaker");
    let open =
        Breaker { state: BreakerStatus::Open, reason: Some("3 in a row".into()), version: 1, ..Default::default() };
    store.save_breaker(0, &open, Some(("closed", "open", "test", "3 in a row")), now).await.unwrap();
    assert!(store.breaker(10).await.unwrap().is_open());
    let auto = action(&owner, Status::Queued, now);
    let refused = store.create_action(&auto, &[event(&auto, 1, None, auto.status)], None, &[], &[], None, now).await;
    assert!(matches!(refused, Err(CreateError::BreakerOpen)), "{refused:?}");
    // Work for a human to approve is not automatic: the breaker does not hold it.
    let key = IdempotencyKey::parse("k-1").unwrap();
    let waiting = action(&owner, Status::AwaitingApproval, now);
    store
        .create_action(&waiting, &[event(&waiting, 1, None, waiting.status)], Some((&key, "h")), &[], &[], None, now)
        .await
        .unwrap();
    let reused = action(&owner, Status::Queued, now);
    let twice = store
        .create_action(&reused, &[event(&reused, 1, None, reused.status)], Some((&key, "h")), &[], &[], None, now)
        .await;
    assert!(
        matches!(twice, Err(CreateError::IdempotencyKeyUsed)),
        "a reused key is reported before the breaker: {twice:?}"
    );
    let (events, next) = store.system_trail("circuit-breaker", 0, 10).await.unwrap();
    assert_eq!((events.len(), next), (1, None));
    assert_eq!(
        (events[0]["from"].as_str(), events[0]["to"].as_str(), events[0]["seq"].as_u64()),
        (Some("closed"), Some("open"), Some(1))
    );
    // A stale save changes nothing.
    assert!(matches!(store.save_breaker(0, &Breaker::default(), None, now).await, Err(TransitionError::Conflict)));
}

async fn policy_overrides_are_versioned_and_audited_page_by_page(store: Arc<dyn Store>) {
    let now = Utc::now();
    let policy = actiongate::policy::Policy::parse_toml(include_str!("../../infra/policy.toml")).unwrap();
    assert_eq!(store.policy_override().await.unwrap(), None);
    assert_eq!(store.put_policy(0, &policy, "admin", now).await.unwrap(), 1);
    assert!(matches!(store.put_policy(0, &policy, "admin", now).await, Err(TransitionError::Conflict)));
    assert_eq!(store.put_policy(1, &policy, "admin", now).await.unwrap(), 2);
    let stored = store.policy_override().await.unwrap().unwrap();
    assert_eq!((stored.version, stored.updated_by.as_str(), &stored.policy), (2, "admin", &policy));
    let (page, next) = store.system_trail("policy", 0, 1).await.unwrap();
    assert_eq!((page.len(), page[0]["seq"].as_u64(), next), (1, Some(1), Some(1)));
    let (page, next) = store.system_trail("policy", 1, 10).await.unwrap();
    assert_eq!((page.len(), page[0]["to"].as_u64(), next), (1, Some(2), None));
    assert!(store.system_trail("policy", 2, 10).await.unwrap().0.is_empty());
    assert!(store.system_trail("policy", u64::MAX, 10).await.unwrap().0.is_empty());
}

async fn a_user_s_credentials_and_kyc_changes_are_audited_on_their_stream(store: Arc<dyn Store>) {
    let now = Utc::now();
    let u = user("profile");
    assert_eq!(store.google_token(&u).await.unwrap(), None);
    store.set_google_token(&u, "ya29.secret", "host", now).await.unwrap();
    assert_eq!(store.google_token(&u).await.unwrap().as_deref(), Some("ya29.secret"));
    store.set_kyc_verified(&u, true, "admin", now).await.unwrap();
    store.set_kyc_verified(&u, false, "admin", now).await.unwrap();
    let stream = actiongate::domain::streams::user_audit_stream(&u);
    let (events, _) = store.system_trail(&stream, 0, 10).await.unwrap();
    let moves: Vec<_> = events.iter().map(|e| (e["seq"].as_u64(), e["from"].as_str(), e["to"].as_str())).collect();
    assert_eq!(
        moves,
        vec![
            (Some(1), Some("google_token"), Some("google_token_stored")),
            (Some(2), Some("kyc_unverified"), Some("kyc_verified")),
            (Some(3), Some("kyc_verified"), Some("kyc_unverified")),
        ]
    );
    assert!(!serde_json::to_string(&events).unwrap().contains("ya29"), "the token is never in the trail");
}

async fn finished_work_is_counted_for_the_day_for_the_user_and_everyone(store: Arc<dyn Store>) {
    let now = Utc::now();
    let owner = user("stats");
    for fail in [false, true] {
        let a = action(&owner, Status::Queued, now);
        store.create_action(&a, &[event(&a, 1, None, a.status)], None, &[], &[], None, now).await.unwrap();
        let end = if fail { Status::Failed } else { Status::Completed };
        let path = [(Status::Executing, "claimed".to_owned(), None), (end, "done".to_owned(), None)];
        store.advance(&a, a.clone(), &path, "test", now).await.unwrap();
    }
    let day = now.date_naive();
    for scope in [actiongate::domain::stats::STATS_ALL.to_owned(), actiongate::domain::stats::user_stats_scope(&owner)]
    {
        let counted = store.daily_stats(&scope, day).await.unwrap();
        let get = |k: &str| counted.get(k).copied().unwrap_or(0);
        assert_eq!(
            (
                get("auto_executed"),
                get("failed"),
                get("t#gmail.flag#executed"),
                get("t#gmail.flag#succeeded"),
                get("t#gmail.flag#failed")
            ),
            (1, 1, 2, 1, 1),
            "{scope}: {counted:?}"
        );
    }
}

async fn the_due_index_gives_due_work_oldest_first_up_to_the_limit(store: Arc<dyn Store>) {
    let now = Utc::now();
    let owner = user("due");
    let mut ids = Vec::new();
    for minutes in [30, 10, 20, 0] {
        let a = action(&owner, Status::Queued, now - Duration::minutes(minutes));
        store.create_action(&a, &[event(&a, 1, None, a.status)], None, &[], &[], None, now).await.unwrap();
        ids.push(a.action_id);
    }
    // Queued work nobody claimed is due five minutes after it was queued; the newest is not yet.
    let due: Vec<ActionId> = store.due(Status::Queued, now, 10).await.unwrap().iter().map(|a| a.action_id).collect();
    assert_eq!(due, vec![ids[0], ids[2], ids[1]]);
    let first: Vec<ActionId> = store.due(Status::Queued, now, 2).await.unwrap().iter().map(|a| a.action_id).collect();
    assert_eq!(first, vec![ids[0], ids[2]]);
    assert!(store.due(Status::Pending, now, 10).await.unwrap().is_empty());
}

async fn a_notification_rides_in_the_move_it_reports_and_each_attempt_is_claimed_once(store: Arc<dyn Store>) {
    use actiongate::domain::notify::{notification_stream, DeliveryState, DELIVERY_LEASE_SECS};
    let now = Utc::now();
    let owner = user("nina");
    let mut a = action(&owner, Status::AwaitingApproval, now);
    a.notify_url = Some("https://hooks.example.com/n".into());
    store.create_action(&a, &[event(&a, 1, None, Status::AwaitingApproval)], None, &[], &[], None, now).await.unwrap();
    assert!(store.notifications(a.action_id).await.unwrap().is_empty(), "creation reports nothing");

    let mut rejected = a.clone();
    rejected.status = Status::Rejected;
    rejected.version = 2;
    let lost = store.transition(&a, &rejected, &event(&a, 1, Some(Status::AwaitingApproval), Status::Rejected)).await;
    assert!(matches!(lost, Err(TransitionError::Conflict)), "a move that fails records no notification");
    assert!(store.notifications(a.action_id).await.unwrap().is_empty());
    store.transition(&a, &rejected, &event(&a, 2, Some(Status::AwaitingApproval), Status::Rejected)).await.unwrap();
    let found = store.notifications(a.action_id).await.unwrap();
    assert_eq!(found.len(), 1);
    let n = &found[0];
    assert_eq!(
        (n.from, n.to, n.version, n.state, n.attempts),
        (Status::AwaitingApproval, Status::Rejected, 2, DeliveryState::Pending, 0)
    );
    assert_eq!(store.notification(a.action_id, 2).await.unwrap().as_ref(), Some(n));
    let due = store.due_notifications(now + Duration::seconds(1), 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.event_id()).collect::<Vec<_>>(), vec![n.event_id()]);

    let claimed = n.claimed(now).unwrap();
    store.save_notification(0, &claimed, false, now).await.unwrap();
    let twice = store.save_notification(0, &claimed, false, now).await;
    assert!(matches!(twice, Err(TransitionError::Conflict)), "an attempt is claimed once");
    assert!(store.due_notifications(now + Duration::seconds(1), 10).await.unwrap().is_empty(), "leased");
    let after_lease = now + Duration::seconds(DELIVERY_LEASE_SECS + 1);
    assert_eq!(store.due_notifications(after_lease, 10).await.unwrap().len(), 1, "a dead executor's lease ends");

    let delivered = claimed.delivered(now);
    store.save_notification(1, &delivered, true, now).await.unwrap();
    assert!(store.due_notifications(after_lease, 10).await.unwrap().is_empty());
    let again = store.save_notification(1, &delivered, true, now).await;
    assert!(matches!(again, Err(TransitionError::Conflict)), "a delivered notification is final");
    let (events, _) = store.system_trail(&notification_stream(a.action_id), 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["state"], "delivered");
    assert_eq!(store.get_action(a.action_id).await.unwrap().unwrap().version, 2, "deliveries never move the action");

    // Without a notify_url, or for a move nobody is told of, nothing is recorded.
    let b = action(&owner, Status::Queued, now);
    store.create_action(&b, &[event(&b, 1, None, Status::Queued)], None, &[], &[], None, now).await.unwrap();
    let mut cancelled = b.clone();
    cancelled.status = Status::Cancelled;
    cancelled.version = 2;
    store.transition(&b, &cancelled, &event(&b, 2, Some(Status::Queued), Status::Cancelled)).await.unwrap();
    assert!(store.notifications(b.action_id).await.unwrap().is_empty());
}

async fn the_inbox_holds_what_waits_for_an_approver_and_nothing_else(store: Arc<dyn Store>) {
    let now = Utc::now();
    let owner = user("ivy");
    let me = EmailAddress::parse(&format!("ap-{}@example.com", uuid_suffix())).unwrap();
    let other = EmailAddress::parse(&format!("other-{}@example.com", uuid_suffix())).unwrap();
    let mut ids = Vec::new();
    for (i, approver) in [&me, &me, &other].into_iter().enumerate() {
        let mut a = action(&owner, Status::AwaitingApproval, now + Duration::milliseconds(i as i64 * 5));
        a.approver = Some(approver.clone());
        store
            .create_action(&a, &[event(&a, 1, None, Status::AwaitingApproval)], None, &[], &[], None, now)
            .await
            .unwrap();
        ids.push(a);
    }
    // Matched whatever the address's case.
    let page = store.inbox(&me.as_str().to_uppercase(), 10, None).await.unwrap().unwrap();
    let got: Vec<ActionId> = page.actions.iter().map(|a| a.action_id).collect();
    assert_eq!(got, vec![ids[1].action_id, ids[0].action_id], "newest first, only mine");
    let first = store.inbox(me.as_str(), 1, None).await.unwrap().unwrap();
    let cursor = first.next_cursor.expect("a full page has a cursor");
    let second = store.inbox(me.as_str(), 1, Some(&cursor)).await.unwrap().unwrap();
    assert_eq!(second.actions[0].action_id, ids[0].action_id);
    assert!(store.inbox(other.as_str(), 1, Some(&cursor)).await.unwrap().is_err(), "another inbox's cursor");

    // A decided action leaves the inbox; its rejection is remembered by the request's fingerprint.
    let a = &ids[0];
    let mut rejected = a.clone();
    rejected.status = Status::Rejected;
    rejected.version = 2;
    rejected.decided_by = Some(me.as_str().to_owned());
    rejected.decided_at = Some(now);
    rejected.decision_reason = Some("not now".into());
    store.transition(a, &rejected, &event(a, 2, Some(Status::AwaitingApproval), Status::Rejected)).await.unwrap();
    let page = store.inbox(me.as_str(), 10, None).await.unwrap().unwrap();
    assert_eq!(page.actions.iter().map(|a| a.action_id).collect::<Vec<_>>(), vec![ids[1].action_id]);
    let fingerprint = actiongate::domain::rejections::fingerprint_of(a).unwrap();
    let remembered = store.last_rejection(&owner, &fingerprint).await.unwrap().expect("remembered");
    assert_eq!(
        (remembered.action_id, remembered.by.as_str(), remembered.reason.as_deref()),
        (a.action_id, me.as_str(), Some("not now"))
    );
    assert!(store.last_rejection(&user("someone"), &fingerprint).await.unwrap().is_none());
}

/// A pool's members each find it in their inbox until they decide; the move that ends the wait
/// takes it out of every inbox.
async fn every_undecided_member_of_a_pool_finds_it_in_their_inbox(store: Arc<dyn Store>) {
    use actiongate::domain::approvers::{Vote, VoteKind};
    let now = Utc::now();
    let members: Vec<EmailAddress> =
        (0..3).map(|i| EmailAddress::parse(&format!("m{i}-{}@example.com", uuid_suffix())).unwrap()).collect();
    let mut a = action(&user("ivy"), Status::AwaitingApproval, now);
    a.approver = Some(members[0].clone());
    a.approvers = members.clone();
    a.approvals_required = 2;
    store.create_action(&a, &[event(&a, 1, None, Status::AwaitingApproval)], None, &[], &[], None, now).await.unwrap();
    let listed = |page: actiongate::ports::store::Page| page.actions.iter().map(|x| x.action_id).collect::<Vec<_>>();
    for m in &members {
        assert_eq!(listed(store.inbox(m.as_str(), 10, None).await.unwrap().unwrap()), vec![a.action_id], "{m}");
    }
    // m1 votes: out of m1's inbox, still in the others'.
    let mut voted = a.clone();
    voted.version = 2;
    voted.votes.push(Vote {
        approver: members[1].as_str().into(),
        decision: VoteKind::Approve,
        at: now,
        via: "api".into(),
        reason: None,
        admin: false,
    });
    store
        .transition(&a, &voted, &event(&a, 2, Some(Status::AwaitingApproval), Status::AwaitingApproval))
        .await
        .unwrap();
    assert!(listed(store.inbox(members[1].as_str(), 10, None).await.unwrap().unwrap()).is_empty());
    assert_eq!(listed(store.inbox(members[2].as_str(), 10, None).await.unwrap().unwrap()), vec![a.action_id]);
    assert_eq!(
        store.get_action(a.action_id).await.unwrap().unwrap().votes.len(),
        1,
        "the action itself is unchanged by its entries"
    );
    // The decision ends the wait: nobody's inbox lists it.
    let mut decided = voted.clone();
    decided.status = Status::Rejected;
    decided.version = 3;
    store
        .transition(&voted, &decided, &event(&voted, 3, Some(Status::AwaitingApproval), Status::Rejected))
        .await
        .unwrap();
    for m in &members {
        assert!(listed(store.inbox(m.as_str(), 10, None).await.unwrap().unwrap()).is_empty(), "{m}");
    }
}

/// A delegation is stored per approver (whatever the case of the address), ended, and audited.
async fn a_delegation_is_kept_per_approver_and_audited(store: Arc<dyn Store>) {
    use actiongate::domain::approvers::Delegation;
    let now = Utc::now();
    let approver = format!("ap-{}@example.com", uuid_suffix());
    assert_eq!(store.delegation(&approver).await.unwrap(), None);
    let d = Delegation { to: EmailAddress::parse("deputy@example.com").unwrap(), until: now + Duration::days(3) };
    store.set_delegation(&approver, Some(&d), "boss", now).await.unwrap();
    let got = store.delegation(&approver.to_uppercase()).await.unwrap().expect("kept");
    assert_eq!((got.to.as_str(), got.until.timestamp()), ("deputy@example.com", d.until.timestamp()));
    store.set_delegation(&approver, None, "boss", now).await.unwrap();
    assert_eq!(store.delegation(&approver).await.unwrap(), None);
    let key = actiongate::domain::approvers::approver_key(&approver);
    let stream = actiongate::domain::streams::user_audit_stream(&UserId::parse(&key).unwrap());
    let (events, _) = store.system_trail(&stream, 0, 10).await.unwrap();
    let moves: Vec<&str> = events.iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(moves, vec!["delegation_set", "delegation_ended"]);
}

async fn admin_listings_come_from_indexes_by_status_user_and_day_with_filters(store: Arc<dyn Store>) {
    let t0 = chrono::DateTime::parse_from_rfc3339("2025-03-10T10:00:00Z").unwrap().with_timezone(&Utc);
    let (alice, bob) = (user("alice"), user("bob"));
    let mut made = Vec::new();
    for (owner, status, tier, action_type, at) in [
        (&alice, Status::Completed, Tier::Auto, "gmail.flag", t0),
        (&bob, Status::AwaitingApproval, Tier::Approval, "send_email", t0 + Duration::days(1)),
        (&alice, Status::Manual, Tier::Manual, "gmail.flag", t0 + Duration::days(2)),
        (&bob, Status::Completed, Tier::Auto, "gmail.flag", t0 + Duration::days(2) + Duration::hours(1)),
        (&alice, Status::Completed, Tier::Auto, "gmail.flag", t0 - Duration::days(40)),
    ] {
        let mut a = actiongate_local::fixtures::action_of(owner, status, at, action_type, json!({"message_id": "m1"}));
        a.tier = Some(tier);
        store.create_action(&a, &[event(&a, 1, None, status)], None, &[], &[], None, at).await.unwrap();
        made.push(a.action_id);
    }
    let base = ActionQuery {
        status: None,
        action_type: None,
        user: None,
        tier: None,
        from: t0 - Duration::hours(1),
        to: t0 + Duration::days(3),
    };
    let ids = |q: ActionQuery| {
        let store = Arc::clone(&store);
        async move {
            // Every page, following the cursors, as a client would.
            let (mut all, mut cursor) = (Vec::new(), None::<String>);
            for _ in 0..20 {
                let page = store.query_actions(&q, 1, cursor.as_deref()).await.unwrap().unwrap();
                all.extend(page.actions.iter().map(|a| a.action_id));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            all
        }
    };
    assert_eq!(ids(base.clone()).await, vec![made[3], made[2], made[1], made[0]], "by day, newest first");
    assert_eq!(ids(ActionQuery { status: Some(Status::Completed), ..base.clone() }).await, vec![made[3], made[0]]);
    assert_eq!(ids(ActionQuery { user: Some(alice.clone()), ..base.clone() }).await, vec![made[2], made[0]]);
    let alice_done = ActionQuery { user: Some(alice.clone()), status: Some(Status::Completed), ..base.clone() };
    assert_eq!(ids(alice_done.clone()).await, vec![made[0]]);
    assert_eq!(ids(ActionQuery { action_type: Some("send_email".into()), ..base.clone() }).await, vec![made[1]]);
    assert_eq!(ids(ActionQuery { tier: Some(Tier::Manual), ..base.clone() }).await, vec![made[2]]);
    let wide = ActionQuery { from: t0 - Duration::days(41), ..alice_done.clone() };
    assert_eq!(ids(wide).await, vec![made[0], made[4]], "the range decides");
    // A cursor belongs to its query.
    let page = store.query_actions(&base, 1, None).await.unwrap().unwrap();
    let cursor = page.next_cursor.expect("more");
    assert!(store.query_actions(&alice_done, 1, Some(&cursor)).await.unwrap().is_err());
    assert!(store.query_actions(&base, 1, Some("garbage")).await.unwrap().is_err());
}

/// Runs each check against DynamoDB (`dynamo::…`) and memory (`memory::…`), optionally
/// configuring each store first.
macro_rules! both {
    (isolated: $($iso:ident;)*) => {
        mod dynamo_own_tables {
            use super::*;
            $(
                #[tokio::test]
                async fn $iso() {
                    super::$iso(Arc::new(isolated_store().await)).await
                }
            )*
        }
        mod memory_own {
            use super::*;
            $(
                #[tokio::test]
                async fn $iso() {
                    super::$iso(Arc::new(MemoryStore::new())).await
                }
            )*
        }
    };
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

both! {
    isolated:
    admin_listings_come_from_indexes_by_status_user_and_day_with_filters;
    approval_links_are_stored_used_once_and_replaced;
    a_cool_down_holds_the_entity_except_for_the_action_that_took_it;
    automatic_work_is_refused_while_the_breaker_is_open_and_a_reused_key_is_told_first;
    policy_overrides_are_versioned_and_audited_page_by_page;
    a_user_s_credentials_and_kyc_changes_are_audited_on_their_stream;
    finished_work_is_counted_for_the_day_for_the_user_and_everyone;
    the_due_index_gives_due_work_oldest_first_up_to_the_limit;
    a_notification_rides_in_the_move_it_reports_and_each_attempt_is_claimed_once;
    the_inbox_holds_what_waits_for_an_approver_and_nothing_else;
    every_undecided_member_of_a_pool_finds_it_in_their_inbox;
    a_delegation_is_kept_per_approver_and_audited;
}
