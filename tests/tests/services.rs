//! Service unit tests on the in-memory ports with the injected clock: intake placement, the
//! sweep, rollback and the executor, each case that was only covered end to end before. They
//! run in milliseconds with no emulator (`actiongate_local::world`).

use actiongate::domain::breaker::{Breaker, BreakerStatus};
use actiongate::domain::{ActionId, Status};
use actiongate::ports::queue::ExecuteMessage;
use actiongate::ports::store::*;
use actiongate::services::executor::Outcome;
use actiongate::services::rollback::RollbackRequest;
use actiongate_local::world::{id_of, proposal, Behavior, World};
use chrono::Duration;
use serde_json::json;

const APPROVER: &str = "approvals@example.com";

async fn created(world: &World, user: &str, body: serde_json::Value) -> ActionId {
    let (status, body) = world.propose(user, body).await;
    assert!(status == 201 || status == 200 || status == 202, "{status} {body}");
    id_of(&body)
}

// ---------------------------------------------------------------- intake placement

#[tokio::test]
async fn tier_one_work_is_held_while_the_breaker_is_open() {
    let world = World::new();
    let mut open =
        Breaker { state: BreakerStatus::Open, reason: Some("3 failed in a row".into()), ..Default::default() };
    open.version = 1;
    world.store.save_breaker(0, &open, Some(("closed", "open", "test", "test")), world.now()).await.unwrap();
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    let action = world.action(id).await;
    assert_eq!(action.status, Status::Pending);
    assert!(action.hold_reason.as_deref().is_some_and(|r| r.starts_with("breaker_open")), "{:?}", action.hold_reason);
    assert!(world.queue.is_empty(), "held work is not queued");
}

#[tokio::test]
async fn the_automatic_limit_holds_the_next_action_until_its_window_ends() {
    let world = World::new();
    for i in 0..5 {
        let mut body = proposal("gmail.archive");
        body["payload"]["message_id"] = json!(format!("m{i}"));
        let id = created(&world, "alice", body).await;
        assert_eq!(world.action(id).await.status, Status::Queued);
    }
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    let held = world.action(id).await;
    assert_eq!(held.status, Status::Pending);
    assert!(held.hold_reason.as_deref().is_some_and(|r| r.starts_with("auto_limit")), "{:?}", held.hold_reason);
    let window_end = chrono::DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z").unwrap();
    assert_eq!(held.hold_until, Some(window_end.into()), "held until the hour's window ends");
}

#[tokio::test]
async fn the_same_entity_cools_down_between_automatic_actions() {
    let world = World::new();
    let mut body = proposal("gmail.archive");
    body["rate_limit_key"] = json!("thread-7");
    let first = created(&world, "alice", body.clone()).await;
    assert_eq!(world.action(first).await.status, Status::Queued);
    let second = created(&world, "alice", body).await;
    let held = world.action(second).await;
    assert_eq!(held.status, Status::Pending);
    assert!(held.hold_reason.as_deref().is_some_and(|r| r.starts_with("cooldown")), "{:?}", held.hold_reason);
}

#[tokio::test]
async fn two_requests_racing_with_one_idempotency_key_make_one_action() {
    let world = World::new();
    let request = || {
        World::request_with(
            "POST",
            "/actions",
            Some(proposal("send_email")),
            "alice",
            false,
            &[("idempotency-key", "order-42")],
        )
    };
    // Both read "no such key" before either writes: the second write loses on the key's
    // condition and answers with the first action.
    world.store.race_next_creations(2);
    let (a, b) = tokio::join!(world.intake_http(request()), world.intake_http(request()));
    let (a, b) = (World::reply(a), World::reply(b));
    assert!(a.0 < 300 && b.0 < 300, "both answer with the action: {a:?} {b:?}");
    assert_eq!(id_of(&a.1), id_of(&b.1));
    let page = world
        .store
        .list_actions(&actiongate::domain::UserId::parse("alice").unwrap(), None, 10, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.actions.len(), 1);
    // The same key with another body is a conflict, not a second action.
    let mut other = proposal("send_email");
    other["payload"]["subject"] = json!("different");
    let replay =
        World::request_with("POST", "/actions", Some(other), "alice", false, &[("idempotency-key", "order-42")]);
    let (status, body) = World::reply(world.intake_http(replay).await);
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn a_rate_limit_refuses_exactly_past_its_limit_and_frees_with_the_next_window() {
    let world = World::new();
    for _ in 0..4 {
        created(&world, "alice", proposal("send_email")).await;
    }
    let (status, body) = world.propose("alice", proposal("send_email")).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("rate_limited")), "{body}");
    // Another user's limit is their own.
    created(&world, "bob", proposal("send_email")).await;
    // One second before the window ends: still refused; at its end: accepted.
    world.advance(Duration::minutes(59) + Duration::seconds(59));
    assert_eq!(world.propose("alice", proposal("send_email")).await.0, 429);
    world.advance(Duration::seconds(1));
    created(&world, "alice", proposal("send_email")).await;
}

// ---------------------------------------------------------------- the sweep

#[tokio::test]
async fn an_unanswered_approval_is_reminded_at_half_time_then_expires() {
    let mut world = World::new();
    let id = created(&world, "alice", proposal("send_email")).await;
    assert_eq!(world.action(id).await.status, Status::AwaitingApproval);
    assert_eq!(world.mailer.sent().len(), 1, "the approval request went out at intake");
    world.advance(Duration::minutes(29));
    world.sweep().await;
    assert_eq!(world.mailer.sent().len(), 1, "no reminder before half the time");
    world.advance(Duration::minutes(1));
    let report = world.sweep().await;
    assert_eq!(report.reminded, 1);
    let mails = world.mailer.sent();
    assert!(mails[1].mail.subject.starts_with("Reminder:"), "{}", mails[1].mail.subject);
    world.advance(Duration::minutes(30));
    let report = world.sweep().await;
    assert_eq!(report.expired, 1);
    let expired = world.action(id).await;
    assert_eq!(expired.status, Status::Expired);
    // Neither the expired request's link nor the API decides anything any more.
    let token =
        mails[0].mail.text.split("/approvals/").nth(1).and_then(|t| t.split_whitespace().next()).unwrap().to_owned();
    let form = World::request("POST", &format!("/approvals/{token}"), None, APPROVER, false);
    let mut form = form;
    *form.body_mut() = lambda_http::Body::Text("decision=approve".into());
    let page = world.approval_http(form).await;
    assert_eq!(page.status().as_u16(), 410, "the link says it expired");
    let (status, _) = world.decide(id, "approve", APPROVER, false).await;
    assert_eq!(status, 409);
    assert_eq!(world.action(id).await.status, Status::Expired);
}

#[tokio::test]
async fn a_crashed_executor_s_idempotent_step_is_recovered_and_runs_once() {
    let mut world = World::new();
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    world.script(id, 0, &[Behavior::EffectThenCrash]);
    world.deliver().await;
    let stuck = world.action(id).await;
    assert_eq!(stuck.status, Status::Executing, "the crash left the claim behind");
    // Nothing happens while the lease lasts; after it, the sweep takes the step back.
    world.sweep().await;
    assert_eq!(world.action(id).await.status, Status::Executing);
    world.advance(Duration::minutes(2));
    let report = world.sweep().await;
    assert_eq!(report.recovered, 1);
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Completed);
    let calls = world.calls_of(id);
    assert_eq!(calls.len(), 2, "the step ran again after the crash: {calls:?}");
    assert_eq!(calls[0].key, calls[1].key, "with the same idempotency key");
    assert_eq!(world.effects_of(id).len(), 1, "so the target saw the change once");
}

#[tokio::test]
async fn a_crashed_executor_s_unrepeatable_step_goes_to_a_human_not_twice_to_the_target() {
    let mut world = World::new();
    let id = created(&world, "alice", proposal("send_email")).await;
    assert_eq!(world.decide(id, "approve", APPROVER, false).await.0, 200);
    world.script(id, 0, &[Behavior::EffectThenCrash]);
    world.deliver().await;
    world.advance(Duration::minutes(2));
    world.settle(3, Duration::minutes(10)).await;
    let action = world.action(id).await;
    assert_eq!(action.status, Status::Failed, "an unknown outcome is never repeated");
    assert_eq!(world.effects_of(id).len(), 1);
    let shown = action.to_api();
    assert!(shown.to_string().contains("outcome_unknown"), "{shown}");
}

#[tokio::test]
async fn queued_work_whose_message_was_lost_is_sent_again() {
    let mut world = World::new();
    world.queue.fail_sends(true);
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    world.queue.fail_sends(false);
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Queued, "no message, no run");
    world.advance(Duration::minutes(5));
    let report = world.sweep().await;
    assert_eq!(report.resent, 1);
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Completed);
}

#[tokio::test]
async fn a_wait_whose_wake_up_never_came_is_woken_by_the_sweep_and_not_before_its_time() {
    let mut world = World::new();
    let plan = json!({"steps": [
        {"action_type": "gmail.archive", "payload": {"message_id": "m1"}},
        {"wait_for": "PT2H"},
        {"action_type": "gmail.archive", "payload": {"message_id": "m2"}},
    ], "confidence": 0.95});
    let id = created(&world, "alice", plan).await;
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Waiting);
    let (_, wake) = world.wakeups.pending().pop().expect("a wake-up was scheduled");
    assert_eq!(wake.at, world.now() + Duration::hours(2));
    // The wake-up is lost (its schedule was deleted by hand).
    let _ = world.wakeups.fire(wake.at);
    world.advance(Duration::hours(2) + Duration::minutes(4));
    world.sweep().await;
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Waiting, "not woken before the sweep's grace");
    world.advance(Duration::minutes(1));
    let report = world.sweep().await;
    assert_eq!(report.woken, 1);
    world.deliver().await;
    let done = world.action(id).await;
    assert_eq!(done.status, Status::Completed);
    let effects = world.effects_of(id);
    assert!(effects[1].at >= effects[0].at + Duration::hours(2), "{effects:?}");
}

#[tokio::test]
async fn held_work_starts_oldest_first_when_the_window_reopens() {
    let mut world = World::new();
    let mut ids = Vec::new();
    for i in 0..8 {
        let mut body = proposal("gmail.archive");
        body["payload"]["message_id"] = json!(format!("m{i}"));
        ids.push(created(&world, "alice", body).await);
        world.advance(Duration::seconds(10));
    }
    world.deliver().await;
    let held: Vec<_> = ids[5..].to_vec();
    for id in &held {
        assert_eq!(world.action(*id).await.status, Status::Pending);
    }
    world.advance(Duration::hours(1));
    let report = world.sweep().await;
    assert_eq!(report.started, 3);
    world.deliver().await;
    // The order the target saw them in.
    let seen: Vec<ActionId> = actiongate_local::world::lock(&world.ledger)
        .effects
        .iter()
        .map(|e| e.action_id)
        .filter(|id| held.contains(id))
        .collect();
    assert_eq!(seen, held, "in the order they were proposed");
}

// ---------------------------------------------------------------- rollback

async fn completed_plan(world: &mut World, steps: serde_json::Value) -> ActionId {
    let id = created(world, "alice", json!({"steps": steps, "confidence": 0.95})).await;
    let action = world.action(id).await;
    if action.status == Status::AwaitingApproval {
        assert_eq!(world.decide(id, "approve", APPROVER, false).await.0, 200);
    }
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Completed);
    id
}

#[tokio::test]
async fn a_rollback_undoes_in_reverse_and_reports_what_cannot_be_undone() {
    let mut world = World::new();
    let steps = json!([
        {"action_type": "gmail.archive", "payload": {"message_id": "m1"}},
        {"action_type": "send_email", "payload": {"to": ["bob@example.com"], "subject": "s", "text": "t"}},
        {"action_type": "gmail.label", "payload": {"message_id": "m1", "label_ids": ["L"]}},
    ]);
    let id = completed_plan(&mut world, steps).await;
    let action = world.action(id).await;
    let refused = world
        .rollback
        .roll_back_by(action.clone(), &RollbackRequest { reason: None, partial: false }, "alice", None)
        .await;
    let refusal = refused.expect_err("a whole rollback is refused when a step cannot be undone").body();
    assert_eq!(refusal["error"], "not_reversible", "{refusal}");
    assert_eq!(refusal["irreversible_steps"][0]["step"], 1, "the sent mail is named: {refusal}");
    let done = world
        .rollback
        .roll_back_by(action, &RollbackRequest { reason: Some("oops".into()), partial: true }, "alice", None)
        .await
        .expect("a partial rollback runs");
    assert_eq!(done.status, Status::RolledBack);
    let undone = actiongate_local::world::lock(&world.ledger).undone.clone();
    assert_eq!(undone, vec![(id, 2), (id, 0)], "reverse order, the sent mail left alone");
    assert_eq!(done.steps[1].state, actiongate::domain::StepState::Completed, "the mail is reported, not faked");
}

#[tokio::test]
async fn a_rollback_whose_worker_stopped_is_resumed_by_the_sweep() {
    let mut world = World::new();
    let steps = json!([
        {"action_type": "gmail.archive", "payload": {"message_id": "m1"}},
        {"action_type": "gmail.archive", "payload": {"message_id": "m2"}},
    ]);
    let id = completed_plan(&mut world, steps).await;
    // A worker claimed the rollback and died: the action is rolling_back under a lease.
    let before = world.action(id).await;
    let mut claimed = before.clone();
    claimed.lease_expires_at = Some(world.now() + Duration::seconds(50));
    claimed.rollback_progress_at = Some(world.now());
    world
        .store
        .advance(&before, claimed, &[(Status::RollingBack, "rollback started".into(), None)], "alice", world.now())
        .await
        .unwrap();
    world.advance(Duration::minutes(1));
    let report = world.sweep().await;
    assert_eq!(report.resumed, 1);
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::RolledBack);
    let undone = actiongate_local::world::lock(&world.ledger).undone.clone();
    assert_eq!(undone, vec![(id, 1), (id, 0)]);
}

#[tokio::test]
async fn past_the_retention_a_step_cannot_be_restored_and_says_so() {
    let mut world = World::new();
    let steps = json!([{"action_type": "gmail.archive", "payload": {"message_id": "m1"}}]);
    let id = completed_plan(&mut world, steps).await;
    world.advance(Duration::days(91));
    let action = world.action(id).await;
    let whole = world
        .rollback
        .roll_back_by(action.clone(), &RollbackRequest { reason: None, partial: false }, "alice", None)
        .await;
    let refusal = whole.expect_err("the snapshot is gone: a whole rollback is refused").body();
    assert_eq!(refusal["error"], "rollback_expired", "{refusal}");
    assert_eq!(refusal["irreversible_steps"][0]["step"], 0, "{refusal}");
    assert!(actiongate_local::world::lock(&world.ledger).undone.is_empty());
}

// ---------------------------------------------------------------- the executor

#[tokio::test]
async fn transient_failures_are_retried_with_growing_backoff_then_succeed() {
    let world = World::new();
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    world.script(id, 0, &[Behavior::Transient, Behavior::Transient]);
    let message = ExecuteMessage::step(id, 0);
    // Full jitter: the k-th wait is uniform in [0, retry_base × 2^(k-1)] (2 s, then 4 s).
    for (attempt, ceiling) in [(1, 2), (2, 4)] {
        assert_eq!(world.run_executor(&message).await, Outcome::Ran(Status::Queued));
        let retry = world.action(id).await;
        assert_eq!((retry.status, retry.attempts), (Status::Queued, attempt));
        let wait = retry.not_before.map_or(0, |t| (t - world.now()).num_seconds());
        assert!((0..=ceiling).contains(&wait), "attempt {attempt} waits {wait}s, at most {ceiling}s");
        // Early, the message is put back for later, and nothing runs.
        if wait > 0 {
            assert!(matches!(world.run_executor(&message).await, Outcome::Ignored(_)));
            assert_eq!(world.action(id).await.attempts, attempt);
        }
        world.advance(Duration::seconds(ceiling));
    }
    assert_eq!(world.run_executor(&message).await, Outcome::Ran(Status::Completed));
    let done = world.action(id).await;
    assert_eq!((done.status, done.attempts), (Status::Completed, 3));
    assert_eq!(world.effects_of(id).len(), 1);
}

#[tokio::test]
async fn a_permanent_failure_fails_at_once_and_counts_against_the_breaker() {
    let mut world = World::new();
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    world.script(id, 0, &[Behavior::Permanent]);
    world.deliver().await;
    let failed = world.action(id).await;
    assert_eq!((failed.status, failed.attempts), (Status::Failed, 1));
    let breaker = world.store.breaker(10).await.unwrap();
    assert_eq!(breaker.consecutive_failures, 1);
}

#[tokio::test]
async fn retries_end_after_max_attempts() {
    let mut world = World::new();
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    world.script(id, 0, &[Behavior::Transient; 10]);
    world.settle(10, Duration::minutes(20)).await;
    let failed = world.action(id).await;
    assert_eq!((failed.status, failed.attempts), (Status::Failed, 3));
    assert!(world.effects_of(id).is_empty());
}

#[tokio::test]
async fn a_plan_failing_for_good_is_compensated_when_the_policy_says_so() {
    let mut world = World::new();
    let steps = json!([
        {"action_type": "gmail.archive", "payload": {"message_id": "m1"}},
        {"action_type": "gmail.archive", "payload": {"message_id": "m2"}},
    ]);
    let id = created(&world, "alice", json!({"steps": steps, "confidence": 0.95})).await;
    world.script(id, 1, &[Behavior::Permanent]);
    world.settle(2, Duration::minutes(1)).await;
    let action = world.action(id).await;
    assert_eq!(action.status, Status::RolledBack, "{:?}", action.status);
    let undone = actiongate_local::world::lock(&world.ledger).undone.clone();
    assert_eq!(undone, vec![(id, 0)]);
}

#[tokio::test]
async fn stale_and_duplicate_messages_change_nothing() {
    let mut world = World::new();
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Completed);
    let version = world.action(id).await.version;
    for step in [0, 1, 7] {
        let outcome = world.run_executor(&ExecuteMessage::step(id, step)).await;
        assert!(matches!(outcome, Outcome::Ignored(_)), "{outcome:?}");
    }
    let unknown = world.run_executor(&ExecuteMessage::step(ActionId::new_v7(world.now()), 0)).await;
    assert!(matches!(unknown, Outcome::DeadLetter(_)), "{unknown:?}");
    assert_eq!(world.action(id).await.version, version);
    assert_eq!(world.effects_of(id).len(), 1);
}

#[tokio::test]
async fn a_scheduled_action_never_runs_early_however_its_message_arrives() {
    let mut world = World::new();
    let mut body = proposal("gmail.archive");
    let at = world.now() + Duration::hours(3);
    body["scheduled_for"] = json!(actiongate::domain::time::format_time(at));
    let id = created(&world, "alice", body).await;
    // A message arrives early anyway (a duplicate, or an operator's redrive).
    let early = world.run_executor(&ExecuteMessage::step(id, 0)).await;
    assert!(matches!(early, Outcome::Ignored(_)), "{early:?}");
    world.settle(20, Duration::minutes(10)).await;
    let effects = world.effects_of(id);
    assert_eq!(effects.len(), 1);
    assert!(effects[0].at >= at, "ran at {} before {}", effects[0].at, at);
}

/// Found by the lifecycle property test: a plan whose type was blocked while it waited stayed
/// `queued` for ever (the executor's stop, `queued → failed`, was not a legal move, so every
/// attempt to record it was taken for a lost race).
#[tokio::test]
async fn a_plan_blocked_after_a_step_ran_fails_and_is_compensated_instead_of_hanging() {
    let mut world = World::new();
    let plan = json!({"steps": [
        {"action_type": "gmail.archive", "payload": {"message_id": "m1"}},
        {"wait_for": "PT1H"},
        {"action_type": "gmail.archive", "payload": {"message_id": "m2"}},
    ], "confidence": 0.95});
    let id = created(&world, "alice", plan).await;
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Waiting);
    let current = world.store.policy_override_raw().await.unwrap();
    let mut policy = (*world.policies.current().await).clone();
    policy.types.get_mut("gmail.archive").unwrap().blocked = true;
    world.store.put_policy(current.map_or(0, |p| p.version), &policy, "admin", world.now()).await.unwrap();
    world.settle(4, Duration::minutes(30)).await;
    let action = world.action(id).await;
    assert_eq!(action.status, Status::RolledBack, "failed, then compensated (the policy compensates)");
    let trail = world.store.audit_trail(id).await.unwrap();
    assert!(trail.iter().any(|e| e.from == Some(Status::Queued) && e.to == Status::Failed), "{trail:?}");
    assert_eq!(world.effects_of(id).len(), 1, "the blocked step never ran");
    assert_eq!(actiongate_local::world::lock(&world.ledger).undone, vec![(id, 0)]);
}

/// One way to describe an action in words: the handler's own preview, in the dry run, the
/// approval mail and the approval page alike (the world's fake handlers say "run <type>").
#[tokio::test]
async fn dry_runs_mail_and_pages_describe_steps_with_the_handler_s_own_preview() {
    let world = World::new();
    let mut dry = proposal("gmail.archive");
    dry["dry_run"] = json!(true);
    let (status, body) = world.propose("alice", dry).await;
    assert_eq!((status, &body["preview"]), (200, &json!(["run gmail.archive"])), "{body}");
    let plan = json!({"steps": [
        {"action_type": "send_email", "payload": {"to": ["bob@example.com"], "subject": "s", "text": "t"}},
        {"wait_for": "PT1H"},
        {"action_type": "gmail.archive", "payload": {"message_id": "m1"}},
    ], "confidence": 0.95});
    let id = created(&world, "alice", plan).await;
    let mail = world.mailer.sent().pop().expect("the approval request was mailed").mail;
    assert!(mail.text.contains("1. run send_email"), "{}", mail.text);
    // A step no handler runs (a wait) is described by the catalogue.
    assert!(mail.text.contains("2. wait PT1H"), "{}", mail.text);
    let token = mail.text.split("/approvals/").nth(1).and_then(|t| t.split_whitespace().next()).expect("a link");
    let page = world.approval_http(World::request("GET", &format!("/approvals/{token}"), None, APPROVER, false)).await;
    let html = match page.body() {
        lambda_http::Body::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    };
    assert!(html.contains("<li>run send_email</li>"), "{html}");
    assert_eq!(world.action(id).await.status, Status::AwaitingApproval);
}

/// A type the policy declares (issue 18's first part): its payload is checked against its
/// JSON Schema in a single action and in a plan's step, it is recorded for a human, never sent
/// to a handler, and `GET /action-types` publishes it with its schema.
#[tokio::test]
async fn a_declared_type_is_validated_by_its_schema_recorded_for_a_human_and_published() {
    let mut policy = actiongate_local::world::policy();
    let rule: actiongate::policy::TypeRule = serde_json::from_value(json!({
        "tier": 3,
        "description": "remove a page (a human does it)",
        "reversible": false,
        "schema": {"type": "object", "required": ["page"], "additionalProperties": false,
                   "properties": {"page": {"type": "string", "minLength": 1}}}
    }))
    .unwrap();
    policy.types.insert("REMOVE_CONTENT".into(), rule);
    policy.check().unwrap();
    let mut world = World::with_policy(policy);
    let made = created(&world, "alice", json!({"action_type": "REMOVE_CONTENT", "payload": {"page": "/old"}})).await;
    assert_eq!(world.action(made).await.status, Status::Manual);
    let (status, body) =
        world.propose("alice", json!({"action_type": "REMOVE_CONTENT", "payload": {"page": ""}})).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("payload.page")), "{body}");
    let plan = |extra: bool| {
        let mut page = json!({"page": "/a"});
        if extra {
            page["extra"] = json!(1);
        }
        json!({"steps": [{"action_type": "gmail.archive", "payload": {"message_id": "m1"}},
                         {"action_type": "REMOVE_CONTENT", "payload": page}], "confidence": 0.99})
    };
    let (status, body) = world.propose("alice", plan(true)).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("steps[1].payload")), "{body}");
    // A plan with a declared (tier-3) step is work for a human as a whole: its tier-1 step never runs.
    let mixed = created(&world, "alice", plan(false)).await;
    assert_eq!(world.action(mixed).await.status, Status::Manual);
    let (status, body) = world.propose("alice", json!({"action_type": "NOT_DECLARED", "payload": {}})).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("action_type")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("REMOVE_CONTENT"), "the known types are listed: {body}");
    world.settle(3, Duration::minutes(10)).await;
    assert!(world.calls_of(made).is_empty(), "work for a human never reaches a handler");
    assert!(world.calls_of(mixed).is_empty(), "nor does any step of a plan left to a human");
    let (status, body) = world.api("GET", "/action-types", None, "bob", false).await;
    assert_eq!(status, 200);
    let types = body["action_types"].as_array().unwrap();
    let declared = types.iter().find(|t| t["action_type"] == "REMOVE_CONTENT").expect("published");
    assert_eq!(declared["description"], "remove a page (a human does it)");
    assert_eq!(declared["payload_schema"]["required"], json!(["page"]));
    assert_eq!(declared["built_in"], false);
    assert!(types.iter().all(|t| t["action_type"] != "make_payment"), "blocked types are left out");
    let (status, _) = world.api("GET", "/rate-limits/REMOVE_CONTENT", None, "alice", false).await;
    assert_eq!(status, 200);
    assert_eq!(world.api("GET", "/rate-limits/NOT_DECLARED", None, "alice", false).await.0, 404);
}

/// A blocked declared type is refused (403, recorded, as a blocked built-in is), and callers
/// never see it listed: not in `GET /action-types`, not in an unknown-type error, no limits.
#[tokio::test]
async fn a_blocked_declared_type_is_refused_and_never_listed() {
    let mut policy = actiongate_local::world::policy();
    let rule: actiongate::policy::TypeRule = serde_json::from_value(json!({"blocked": true, "tier": 3})).unwrap();
    policy.types.insert("SECRET_THING".into(), rule);
    policy.check().unwrap();
    let world = World::with_policy(policy);
    let (status, body) = world.propose("alice", json!({"action_type": "SECRET_THING", "payload": {}})).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("blocked")), "{body}");
    let (_, listed) = world.api("GET", "/action-types", None, "alice", false).await;
    assert!(listed["action_types"].as_array().unwrap().iter().all(|t| t["action_type"] != "SECRET_THING"));
    let (_, unknown) = world.propose("alice", json!({"action_type": "NOPE", "payload": {}})).await;
    assert!(!unknown["message"].as_str().unwrap().contains("SECRET_THING"), "{unknown}");
    assert_eq!(world.api("GET", "/rate-limits/SECRET_THING", None, "alice", false).await.0, 404);
}

/// A step whose target changed between attempts (a connector pointed elsewhere by a policy
/// change) is never sent to the new target: the first may have acted, so a human checks; and
/// a rollback will not undo it there either.
#[tokio::test]
async fn a_step_is_never_retried_or_undone_at_another_target_than_its_first() {
    let mut world = World::new();
    actiongate_local::world::lock(&world.ledger).pin = Some("connector:A".into());
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    world.script(id, 0, &[Behavior::Transient]);
    // One attempt only (its retry may be due at once: full jitter can wait 0 s).
    let first = world.run_executor(&ExecuteMessage::step(id, 0)).await;
    assert_eq!(first, Outcome::Ran(Status::Queued));
    assert_eq!(world.action(id).await.steps[0].pin.as_deref(), Some("connector:A"));
    actiongate_local::world::lock(&world.ledger).pin = Some("connector:B".into());
    world.settle(2, Duration::minutes(1)).await;
    let action = world.action(id).await;
    assert_eq!(action.status, Status::Failed);
    assert!(action.to_api().to_string().contains("target_changed"), "{}", action.to_api());
    assert_eq!(world.calls_of(id).len(), 0, "the transient attempt sent nothing; B was never called");
    // A completed step pinned to A is not undone at B.
    actiongate_local::world::lock(&world.ledger).pin = Some("connector:A".into());
    let done = created(&world, "alice", {
        let mut body = proposal("gmail.archive");
        body["payload"]["message_id"] = json!("m2");
        body
    })
    .await;
    world.deliver().await;
    assert_eq!(world.action(done).await.status, Status::Completed);
    actiongate_local::world::lock(&world.ledger).pin = Some("connector:B".into());
    let refused = world
        .rollback
        .roll_back_by(world.action(done).await, &RollbackRequest { reason: None, partial: false }, "alice", None)
        .await
        .expect_err("not undone at another target")
        .body();
    assert_eq!(refused["irreversible_steps"][0]["why"], "target_changed", "{refused}");
}

/// A target that asks to be left alone (`Retry-After`) is not retried sooner, whatever the
/// backoff would have said.
#[tokio::test]
async fn a_retry_waits_at_least_as_long_as_the_target_asked() {
    let world = World::new();
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    world.script(id, 0, &[Behavior::Busy(600)]);
    let message = ExecuteMessage::step(id, 0);
    assert_eq!(world.run_executor(&message).await, Outcome::Ran(Status::Queued));
    let waiting = world.action(id).await;
    assert_eq!(waiting.not_before.map(|t| (t - world.now()).num_seconds()), Some(600), "not the 0–2 s backoff");
    world.advance(Duration::seconds(599));
    assert!(matches!(world.run_executor(&message).await, Outcome::Ignored(_)), "not before it asked");
    world.advance(Duration::seconds(1));
    assert_eq!(world.run_executor(&message).await, Outcome::Ran(Status::Completed));
}

// ---------------------------------------------------------------- per-integration breakers

/// The world's policy with the fake `gmail.archive` integration opening after 2 transient
/// failures in a row and cooling off for a minute.
fn flaky_integration_world() -> World {
    let mut doc = serde_json::to_value(actiongate_local::world::policy()).unwrap();
    doc["integrations"] = json!({"fake:gmail.archive": {"consecutive_failures": 2, "cool_off": "PT1M", "min_actions": 1, "max_wait": "PT1H"}});
    World::with_policy(actiongate::policy::Policy::parse_json(doc).unwrap())
}

#[tokio::test]
async fn a_failing_integration_opens_its_own_breaker_its_work_waits_and_a_probe_closes_it() {
    let mut world = flaky_integration_world();
    let failing = created(&world, "alice", proposal("gmail.archive")).await;
    world.script(failing, 0, &[Behavior::Transient, Behavior::Transient]);
    let first = ExecuteMessage::step(failing, 0);
    assert_eq!(world.run_executor(&first).await, Outcome::Ran(Status::Queued));
    world.advance(Duration::seconds(5));
    assert_eq!(world.run_executor(&first).await, Outcome::Ran(Status::Queued));
    let name = "fake:gmail.archive";
    let breaker = world.store.integration(name, 20).await.unwrap();
    assert!(breaker.is_open(), "two transient failures in a row open it: {breaker:?}");
    assert_eq!(breaker.breaker.reason.as_deref(), Some("2 calls to fake:gmail.archive failed in a row"));
    let alerts: Vec<_> =
        world.mailer.sent().into_iter().filter(|s| s.mail.subject.contains("fake:gmail.archive paused")).collect();
    assert_eq!(alerts.len(), 1, "the admin is told once");
    // The autonomy breaker is another breaker: nothing failed for good, it stays closed.
    assert!(!world.store.breaker(10).await.unwrap().is_open());

    // New work for the integration waits queued (no attempt spent, nothing failed), audited.
    let waiting = created(&world, "bob", proposal("gmail.archive")).await;
    world.deliver().await;
    let held = world.action(waiting).await;
    assert_eq!((held.status, held.attempts), (Status::Queued, 0));
    let until = held.not_before.expect("it waits for the cool-off");
    assert_eq!(until, breaker.breaker.opened_at.unwrap() + Duration::minutes(1));
    let (_, trail) = world.api("GET", &format!("/actions/{waiting}/audit"), None, "bob", false).await;
    assert!(trail.to_string().contains("integration_open"), "{trail}");
    assert!(world.effects_of(waiting).is_empty());
    // Another delivery of its message is not due either: put back, nothing runs.
    let message = ExecuteMessage::step(waiting, 0);
    assert!(matches!(world.run_executor(&message).await, Outcome::Ignored(_)));
    assert_eq!(world.action(waiting).await.version, held.version);
    world.deliver().await;
    let back: Vec<_> = world.inbox.iter().filter(|(_, m)| m.action_id == waiting).collect();
    assert!(!back.is_empty() && back.iter().all(|(at, _)| *at >= until), "not before the cool-off ends: {back:?}");

    // Other integrations keep running: approved tier-2 email goes out meanwhile.
    let email = created(&world, "carol", proposal("send_email")).await;
    assert_eq!(world.decide(email, "approve", APPROVER, false).await.0, 200);
    world.deliver().await;
    assert_eq!(world.action(email).await.status, Status::Completed);

    // The admin sees it open.
    let (status, list) = world.api("GET", "/admin/integrations", None, "root", true).await;
    assert_eq!(status, 200);
    let entry = list["integrations"].as_array().unwrap().iter().find(|i| i["integration"] == name).cloned().unwrap();
    assert_eq!(entry["state"], "open", "{entry}");
    assert_eq!(world.api("GET", "/admin/integrations", None, "alice", false).await.0, 403);

    // After the cool-off one call is the probe; it succeeds, the circuit closes and the rest runs.
    world.advance(Duration::minutes(2));
    world.settle(3, Duration::seconds(30)).await;
    for id in [failing, waiting] {
        let done = world.action(id).await;
        assert_eq!(done.status, Status::Completed, "{id}");
        assert_eq!(world.effects_of(id).len(), 1, "ran once: {id}");
    }
    assert!(!world.store.integration(name, 20).await.unwrap().is_open());
    let (_, one) = world.api("GET", &format!("/admin/integrations/{name}"), None, "root", true).await;
    let moves: Vec<(String, String)> = one["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].as_str().unwrap().to_owned(), e["to"].as_str().unwrap().to_owned()))
        .collect();
    let moves: Vec<(&str, &str)> = moves.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(moves, vec![("closed", "open"), ("open", "half_open"), ("half_open", "closed")], "{one}");
    assert_eq!(one["state"], "closed");
}

#[tokio::test]
async fn a_failed_probe_opens_it_again_and_an_admin_can_close_it() {
    let mut world = flaky_integration_world();
    let name = "fake:gmail.archive";
    let failing = created(&world, "alice", proposal("gmail.archive")).await;
    world.script(failing, 0, &[Behavior::Transient, Behavior::Transient, Behavior::Transient]);
    let message = ExecuteMessage::step(failing, 0);
    world.run_executor(&message).await;
    world.advance(Duration::seconds(5));
    world.run_executor(&message).await;
    let opened = world.store.integration(name, 20).await.unwrap();
    assert!(opened.is_open());
    world.queue.take();
    // The cool-off passes; the retry is the probe, and it fails: open again, no second alert.
    world.advance(Duration::seconds(61));
    assert_eq!(world.run_executor(&message).await, Outcome::Ran(Status::Failed), "its last attempt");
    let again = world.store.integration(name, 20).await.unwrap();
    assert!(again.is_open() && again.probe_started_at.is_none());
    assert!(again.breaker.opened_at > opened.breaker.opened_at, "a new cool-off");
    assert_eq!(again.openings, 1);
    let alerts = world.mailer.sent().into_iter().filter(|s| s.mail.subject.contains("paused")).count();
    assert_eq!(alerts, 1);
    // An administrator closes it; work runs at once.
    let (status, body) = world.api("POST", &format!("/admin/integrations/{name}/reset"), None, "root", true).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("closed")), "{body}");
    assert_eq!(world.api("POST", &format!("/admin/integrations/{name}/reset"), None, "bob", false).await.0, 403);
    let next = created(&world, "bob", proposal("gmail.archive")).await;
    world.deliver().await;
    assert_eq!(world.action(next).await.status, Status::Completed);
}

#[tokio::test]
async fn forwarding_outside_the_allowed_domains_is_refused_at_intake_naming_the_address() {
    let world = World::new();
    let forward = |to: serde_json::Value| json!({"action_type": "gmail.forward", "payload": {"message_id": "m1", "to": to, "text": "FYI"}});
    let (status, body) = world.propose("alice", forward(json!(["a@example.com", "x@evil.test"]))).await;
    assert_eq!(
        (status, body["error"].as_str(), body["field"].as_str()),
        (403, Some("domain_not_allowed"), Some("payload.to[1]")),
        "{body}"
    );
    let (status, body) = world.propose("alice", forward(json!(["a@sub.example.com"]))).await;
    assert_eq!((status, body["status"].as_str()), (201, Some("awaiting_approval")), "{body}");
    // In a plan the field names the step.
    let plan = json!({"steps": [{"action_type": "gmail.archive", "payload": {"message_id": "m1"}},
                                {"action_type": "gmail.forward", "payload": {"message_id": "m1", "to": ["x@evil.test"]}}]});
    let (status, body) = world.propose("alice", plan).await;
    assert_eq!((status, body["field"].as_str()), (403, Some("steps[1].payload.to[0]")), "{body}");
}

#[tokio::test]
async fn work_that_waited_longer_than_max_wait_for_its_integration_fails_instead_of_waiting_forever() {
    use actiongate::domain::breaker::BreakerStatus;
    use actiongate::domain::integrations::IntegrationBreaker;
    let mut world = flaky_integration_world();
    let name = "fake:gmail.archive";
    // The integration is down and keeps failing its probes: open, again and again.
    let open_at = |at| {
        let mut b = IntegrationBreaker::default();
        b.breaker.state = BreakerStatus::Open;
        b.breaker.opened_at = Some(at);
        b.breaker.reason = Some("down (test)".into());
        b
    };
    let mut b = open_at(world.now());
    b.breaker.version = 1;
    world.store.save_integration(name, 0, &b, None, world.now()).await.unwrap();
    let id = created(&world, "alice", proposal("gmail.archive")).await;
    world.deliver().await;
    let first = world.action(id).await;
    assert_eq!((first.status, first.attempts), (Status::Queued, 0));
    let since = first.integration_wait_since.expect("it started waiting");
    let audited = world.store.audit_trail(id).await.unwrap().len();
    // Reopened by a failed probe 50 minutes later: the step keeps waiting, quietly.
    world.advance(Duration::minutes(50));
    let mut again = open_at(world.now());
    again.breaker.version = 2;
    world.store.save_integration(name, 1, &again, None, world.now()).await.unwrap();
    world.run_executor(&ExecuteMessage::step(id, 0)).await;
    let waiting = world.action(id).await;
    assert_eq!((waiting.status, waiting.integration_wait_since), (Status::Queued, Some(since)));
    assert_eq!(world.store.audit_trail(id).await.unwrap().len(), audited, "only the first wait is audited");
    // Past max_wait (an hour), the integration still down, it fails instead of waiting on.
    world.advance(Duration::seconds(10 * 60 + 30));
    let mut still = open_at(world.now());
    still.breaker.version = 3;
    world.store.save_integration(name, 2, &still, None, world.now()).await.unwrap();
    world.run_executor(&ExecuteMessage::step(id, 0)).await;
    let failed = world.action(id).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.error.as_ref().unwrap()["code"], "integration_unavailable", "{:?}", failed.error);
    assert!(world.effects_of(id).is_empty());
}

#[tokio::test]
async fn a_probe_the_target_refuses_closes_the_breaker_and_our_own_errors_never_count() {
    use actiongate::domain::integrations::IntegrationSettings;
    use actiongate::services::breaker::{record_call, Call, CallOutcome};
    let world = World::new();
    let settings = IntegrationSettings { consecutive_failures: 1, min_actions: 1, ..Default::default() };
    let failed = Call { outcome: CallOutcome::Failed, probe: false, source: ("a1", "alice") };
    let opened = record_call(&world.store, "gmail", &settings, failed, "test", world.now()).await.unwrap();
    assert!(opened.is_some());
    // Our store or a per-user 429 says nothing about the integration.
    let ours = actiongate::ports::handler::HandlerError::transient("store_unavailable", "x");
    assert_eq!(CallOutcome::of(Some(&ours)), CallOutcome::Unrelated);
    let quota = actiongate::ports::handler::HandlerError::transient("http_429", "x");
    assert_eq!(CallOutcome::of(Some(&quota)), CallOutcome::Unrelated);
    // A refusal of ours (no token stored) never reached the target: it proves nothing.
    let ours = actiongate::ports::handler::HandlerError::permanent("no_credentials", "x");
    assert_eq!(CallOutcome::of(Some(&ours)), CallOutcome::Unrelated);
    let theirs = actiongate::ports::handler::HandlerError::permanent("http_404", "x");
    assert_eq!(CallOutcome::of(Some(&theirs)), CallOutcome::Refused);
    // A refused call is the request's fault; as a probe, it shows the integration answers.
    let refused = Call { outcome: CallOutcome::Refused, probe: false, source: ("a2", "alice") };
    record_call(&world.store, "gmail", &settings, refused, "test", world.now()).await.unwrap();
    assert!(world.store.integration("gmail", 20).await.unwrap().is_open());
    let probe = Call { outcome: CallOutcome::Refused, probe: true, source: ("a3", "alice") };
    record_call(&world.store, "gmail", &settings, probe, "test", world.now()).await.unwrap();
    assert!(!world.store.integration("gmail", 20).await.unwrap().is_open());
}

/// An `Idempotency-Key` that is not visible ASCII reaches the function and is refused, never
/// silently ignored (the request would otherwise run without idempotency).
#[tokio::test]
async fn a_non_ascii_idempotency_key_is_refused_not_ignored() {
    let world = World::new();
    let request = World::request_with(
        "POST",
        "/actions",
        Some(proposal("gmail.archive")),
        "alice",
        false,
        &[("idempotency-key", "clé-1")],
    );
    let (status, body) = World::reply(world.intake_http(request).await);
    assert_eq!((status, body["field"].as_str()), (400, Some("Idempotency-Key")), "{body}");
    let alice = actiongate::domain::UserId::parse("alice").unwrap();
    let page = world.store.list_actions(&alice, None, 10, None).await.unwrap().unwrap();
    assert!(page.actions.is_empty(), "nothing was created");
}

// ---------------------------------------------------------------- status notifications

fn with_notify(mut body: serde_json::Value) -> serde_json::Value {
    body["notify_url"] = json!("https://hooks.example.com/actiongate");
    body
}

#[tokio::test]
async fn an_approval_and_the_completion_are_each_posted_once_in_order() {
    let mut world = World::new();
    let id = created(&world, "alice", with_notify(proposal("gmail.label"))).await;
    assert!(world.queue.is_empty(), "nothing is reported before a decision");
    assert_eq!(world.decide(id, "approve", APPROVER, false).await.0, 200);
    world.settle(3, Duration::seconds(5)).await;
    assert_eq!(world.action(id).await.status, Status::Completed);
    let got = world.receiver.received();
    let moves: Vec<(String, String)> =
        got.iter().map(|(_, _, b)| (b["from"].as_str().unwrap().into(), b["to"].as_str().unwrap().into())).collect();
    assert_eq!(
        moves,
        vec![("awaiting_approval".into(), "queued".into()), ("executing".into(), "completed".into())],
        "{got:?}"
    );
    for (url, event_id, body) in &got {
        assert_eq!(url, "https://hooks.example.com/actiongate");
        assert_eq!(body["event"], "action.status_changed");
        assert_eq!(body["action_id"], id.to_string());
        assert_eq!(body["event_id"].as_str(), Some(event_id.as_str()));
    }
    let stored = world.store.notifications(id).await.unwrap();
    assert!(stored.iter().all(|n| n.state == actiongate::domain::notify::DeliveryState::Delivered && n.attempts == 1));
    let (status, list) = world.api("GET", &format!("/actions/{id}/notifications"), None, "alice", false).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["notifications"].as_array().unwrap().len(), 2);
    assert_eq!(list["attempts"].as_array().unwrap().len(), 2, "every attempt is audited: {list}");
    let (status, _) = world.api("GET", &format!("/actions/{id}/notifications"), None, "mallory", false).await;
    assert_eq!(status, 404, "someone else's notifications are not shown");
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_backoff_and_never_touches_the_action() {
    use actiongate::ports::handler::HandlerError;
    let mut world = World::new();
    let id = created(&world, "alice", with_notify(proposal("gmail.label"))).await;
    world.receiver.fail_next([HandlerError::transient("http_503", "down"), HandlerError::transient("timeout", "slow")]);
    assert_eq!(world.decide(id, "reject", APPROVER, false).await.0, 200);
    let before = world.action(id).await;
    assert_eq!(before.status, Status::Rejected);
    // Backoff is at most 10 s, then 20 s: a few minutes of queue and sweep deliver it.
    world.settle(20, Duration::seconds(15)).await;
    let got = world.receiver.received();
    assert_eq!(got.len(), 3, "two failures, then the delivery: {got:?}");
    assert!(got.iter().all(|(_, e, _)| *e == got[0].1), "every attempt carries the same event id");
    let n = &world.store.notifications(id).await.unwrap()[0];
    assert_eq!((n.state, n.attempts), (actiongate::domain::notify::DeliveryState::Delivered, 3));
    assert_eq!(world.action(id).await.version, before.version, "deliveries never move the action");
}

#[tokio::test]
async fn a_receiver_that_refuses_for_good_is_given_up_at_once() {
    use actiongate::ports::handler::HandlerError;
    let mut world = World::new();
    let id = created(&world, "alice", with_notify(proposal("gmail.label"))).await;
    world.receiver.fail_next([HandlerError::permanent("http_410", "gone")]);
    assert_eq!(world.decide(id, "reject", APPROVER, false).await.0, 200);
    world.settle(10, Duration::minutes(5)).await;
    assert_eq!(world.receiver.received().len(), 1);
    let n = &world.store.notifications(id).await.unwrap()[0];
    assert_eq!(n.state, actiongate::domain::notify::DeliveryState::GaveUp);
    assert!(n.last_error.as_deref().is_some_and(|e| e.contains("http_410")), "{n:?}");
}

#[tokio::test]
async fn a_lost_queue_message_or_a_dead_executor_is_recovered_by_the_sweep() {
    let mut world = World::new();
    let id = created(&world, "alice", with_notify(proposal("gmail.label"))).await;
    world.queue.fail_sends(true);
    assert_eq!(world.decide(id, "reject", APPROVER, false).await.0, 200);
    world.queue.fail_sends(false);
    world.deliver().await;
    assert!(world.receiver.received().is_empty(), "the fast path's message was lost");
    // An executor claims it and dies before posting: the lease runs out, the sweep hands it on.
    let n = world.store.notifications(id).await.unwrap().remove(0);
    let claimed = n.claimed(world.now()).unwrap();
    world.store.save_notification(0, &claimed, false, world.now()).await.unwrap();
    world.settle(1, Duration::seconds(30)).await;
    assert!(world.receiver.received().is_empty(), "a leased delivery is not taken over early");
    world.settle(3, Duration::seconds(30)).await;
    assert_eq!(world.receiver.received().len(), 1);
    let n = &world.store.notifications(id).await.unwrap()[0];
    assert_eq!((n.state, n.attempts), (actiongate::domain::notify::DeliveryState::Delivered, 2));
}

#[tokio::test]
async fn two_executors_with_the_same_message_post_once() {
    let world = World::new();
    let id = created(&world, "alice", with_notify(proposal("gmail.label"))).await;
    assert_eq!(world.decide(id, "reject", APPROVER, false).await.0, 200);
    let messages: Vec<ExecuteMessage> = world.queue.take().into_iter().map(|(m, _)| m).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (a, b) = tokio::join!(world.run_executor(&messages[0]), world.run_executor(&messages[0]));
    assert_eq!(world.receiver.received().len(), 1, "{a:?} {b:?}");
}

#[tokio::test]
async fn notify_urls_must_be_https_without_credentials() {
    let world = World::new();
    for bad in ["http://hooks.example.com/x", "https://u:p@hooks.example.com/x", "ftp://x.example.com/", "nope"] {
        let mut body = proposal("gmail.label");
        body["notify_url"] = json!(bad);
        let (status, answer) = world.propose("alice", body).await;
        assert_eq!((status, answer["field"].as_str()), (400, Some("notify_url")), "{bad}: {answer}");
    }
    let (status, answer) = world.propose("alice", with_notify(proposal("gmail.label"))).await;
    assert_eq!(status, 201, "{answer}");
    let (_, shown) = world.api("GET", &format!("/actions/{}", id_of(&answer)), None, "alice", false).await;
    assert_eq!(shown["notify_url"], "https://hooks.example.com/actiongate");
}

#[tokio::test]
async fn a_last_attempt_that_never_reported_is_given_up_not_kept_pending() {
    use actiongate::domain::notify::{DeliveryState, MAX_DELIVERY_ATTEMPTS};
    let mut world = World::new();
    let id = created(&world, "alice", with_notify(proposal("gmail.label"))).await;
    world.queue.fail_sends(true);
    assert_eq!(world.decide(id, "reject", APPROVER, false).await.0, 200);
    world.queue.fail_sends(false);
    // Every attempt but the last failed; the last was claimed by an executor that died.
    let mut n = world.store.notifications(id).await.unwrap().remove(0);
    let mut seen = 0;
    while n.attempts < MAX_DELIVERY_ATTEMPTS {
        let claimed = n.claimed(world.now()).unwrap();
        world.store.save_notification(seen, &claimed, false, world.now()).await.unwrap();
        seen = claimed.attempts;
        n = claimed;
    }
    world.settle(4, Duration::seconds(30)).await;
    let n = &world.store.notifications(id).await.unwrap()[0];
    assert_eq!(n.state, DeliveryState::GaveUp, "{n:?}");
    assert!(world.receiver.received().is_empty());
    assert!(world.store.due_notifications(world.now() + Duration::days(1), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn each_user_gets_their_own_receiver_key() {
    let world = World::new();
    let (status, alice) = world.api("GET", "/notifications/key", None, "alice", false).await;
    assert_eq!(status, 200, "{alice}");
    let (_, bob) = world.api("GET", "/notifications/key", None, "bob", false).await;
    assert_eq!(alice["key"].as_str().map(str::len), Some(64));
    assert_ne!(alice["key"], bob["key"]);
    assert_eq!(alice["user_id"], "alice");
}

// ---------------------------------------------------------------- rejection memory

#[tokio::test]
async fn the_same_request_after_a_rejection_is_refused_with_who_when_and_why() {
    let world = World::new();
    let id = created(&world, "alice", proposal("gmail.label")).await;
    assert_eq!(world.decide(id, "reject", APPROVER, false).await.0, 200);
    let (status, refused) = world.propose("alice", proposal("gmail.label")).await;
    assert_eq!((status, refused["error"].as_str()), (409, Some("previously_rejected")), "{refused}");
    assert_eq!(refused["by"], APPROVER);
    assert_eq!(refused["reason"], "test");
    assert_eq!(refused["rejected_action_id"], id.to_string());
    // The same payload with its keys in another order is the same request; a dry run is told too.
    let mut reordered: serde_json::Value = serde_json::from_str(
        r#"{"payload": {"label_ids": ["Label_1"], "message_id": "m1"}, "action_type": "gmail.label"}"#,
    )
    .unwrap();
    reordered["confidence"] = json!(0.95);
    assert_eq!(world.propose("alice", reordered.clone()).await.0, 409);
    reordered["dry_run"] = json!(true);
    assert_eq!(world.propose("alice", reordered).await.0, 409);
    // The one-step plan of the same action is the same request.
    let plan = json!({"steps": [{"action_type": "gmail.label", "payload": {"message_id": "m1", "label_ids": ["Label_1"]}}], "confidence": 0.95});
    let (status, answer) = world.propose("alice", plan).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("previously_rejected")), "{answer}");
    // Another payload, or another user, is another request.
    let mut other = proposal("gmail.label");
    other["payload"]["label_ids"] = json!(["Label_2"]);
    assert_eq!(world.propose("alice", other).await.0, 201);
    assert_eq!(world.propose("bob", proposal("gmail.label")).await.0, 201);
}

#[tokio::test]
async fn only_an_administrator_forces_past_a_rejection_and_memory_ends() {
    let world = World::new();
    let id = created(&world, "alice", proposal("gmail.label")).await;
    assert_eq!(world.decide(id, "reject", APPROVER, false).await.0, 200);
    let mut forced = proposal("gmail.label");
    forced["force"] = json!(true);
    let (status, answer) = world.propose("alice", forced.clone()).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("force")), "{answer}");
    let (status, answer) = world.api("POST", "/actions", Some(forced), "alice", true).await;
    assert_eq!(status, 201, "an administrator's own request, forced: {answer}");
    let reasons = answer["reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r.as_str().is_some_and(|r| r.starts_with("forced_past_rejection:"))), "{answer}");
    // The policy remembers for 7 days by default.
    world.advance(Duration::days(7) + Duration::seconds(1));
    assert_eq!(world.propose("alice", proposal("gmail.label")).await.0, 201);
}

#[tokio::test]
async fn an_expired_request_or_a_cancelled_one_is_not_remembered_as_rejected() {
    let mut world = World::new();
    let id = created(&world, "alice", proposal("gmail.label")).await;
    world.advance(Duration::hours(2));
    world.sweep().await;
    assert_eq!(world.action(id).await.status, Status::Expired);
    assert_eq!(world.propose("alice", proposal("gmail.label")).await.0, 201);
}

// ---------------------------------------------------------------- breaker demotion

#[tokio::test]
async fn with_require_approval_tier_one_work_goes_to_a_human_while_the_breaker_is_open() {
    let mut policy = actiongate_local::world::policy();
    policy.auto_execution.breaker.on_open = actiongate::domain::breaker::OnOpen::RequireApproval;
    let world = World::with_policy(policy);
    let mut open =
        Breaker { state: BreakerStatus::Open, reason: Some("3 failed in a row".into()), ..Default::default() };
    open.version = 1;
    world.store.save_breaker(0, &open, Some(("closed", "open", "test", "test")), world.now()).await.unwrap();
    let (status, body) = world.propose("alice", proposal("gmail.archive")).await;
    assert_eq!((status, body["status"].as_str()), (201, Some("awaiting_approval")), "{body}");
    assert!(body["reasons"].as_array().unwrap().iter().any(|r| r == "breaker_open_requires_approval"), "{body}");
    let id = id_of(&body);
    let action = world.action(id).await;
    assert_eq!(action.approver.as_ref().map(|a| a.as_str()), Some(APPROVER));
    assert!(world.mailer.sent().iter().any(|m| m.mail.to.iter().any(|t| t == APPROVER)), "the approver is mailed");
    assert!(world.queue.is_empty(), "nothing runs on its own");
    let reasons = &world.action(id).await.reasons;
    assert!(
        reasons.iter().any(|r| r == "needs_approval") && !reasons.iter().any(|r| r == "auto_execute"),
        "{reasons:?}"
    );
    assert_eq!(world.decide(id, "approve", APPROVER, false).await.0, 200);
    assert_eq!(world.action(id).await.status, Status::Queued, "approved work runs even with the breaker open");

    // Refusing "run it now while the breaker is open" is not refusing the request itself.
    let mut body = proposal("gmail.archive");
    body["payload"]["message_id"] = json!("m9");
    let other = created(&world, "alice", body.clone()).await;
    assert_eq!(world.decide(other, "reject", APPROVER, false).await.0, 200);
    assert_eq!(world.propose("alice", body).await.0, 201, "a demoted action's rejection is not remembered");
}

// ---------------------------------------------------------------- the approver's inbox

#[tokio::test]
async fn the_inbox_lists_what_waits_for_me_newest_first_a_page_at_a_time() {
    let world = World::new();
    let first = created(&world, "alice", proposal("gmail.label")).await;
    world.advance(Duration::seconds(1));
    let mut second_body = proposal("gmail.label");
    second_body["payload"]["message_id"] = json!("m2");
    let second = created(&world, "bob", second_body).await;
    let _auto = created(&world, "alice", proposal("gmail.archive")).await;

    let (status, inbox) = world.api("GET", "/approvals?status=pending", None, APPROVER, false).await;
    assert_eq!(status, 200, "{inbox}");
    let ids: Vec<&str> =
        inbox["approvals"].as_array().unwrap().iter().map(|a| a["action_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![second.to_string(), first.to_string()]);

    let (_, page) = world.api("GET", "/approvals?limit=1", None, APPROVER, false).await;
    assert_eq!(page["approvals"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = world.api("GET", &format!("/approvals?limit=1&cursor={cursor}"), None, APPROVER, false).await;
    assert_eq!(next["approvals"][0]["action_id"], first.to_string());

    assert_eq!(world.decide(first, "approve", APPROVER, false).await.0, 200);
    let (_, after) = world.api("GET", "/approvals", None, APPROVER, false).await;
    assert_eq!(after["approvals"].as_array().unwrap().len(), 1, "a decided action leaves the inbox: {after}");

    let (_, theirs) = world.api("GET", "/approvals", None, "someone@example.com", false).await;
    assert!(theirs["approvals"].as_array().unwrap().is_empty(), "nobody sees another approver's inbox");
    let (status, _) = world.api("GET", "/approvals?status=approved", None, APPROVER, false).await;
    assert_eq!(status, 400);
    let (status, _) =
        world.api("GET", &format!("/approvals?cursor={cursor}"), None, "someone@example.com", false).await;
    assert_eq!(status, 400, "a cursor works only for the inbox that returned it");
}

// ---------------------------------------------------------------- self-approval, explicitly allowed

#[tokio::test]
async fn a_requester_approves_their_own_action_only_where_the_type_allows_it_explicitly() {
    let mut policy = actiongate_local::world::policy();
    policy.types.get_mut("gmail.label").unwrap().allow_self_approval = true;
    let world = World::with_policy(policy);
    let me = "alice@example.com";
    let mut body = proposal("gmail.label");
    body["approver"] = json!(me);
    let id = created(&world, me, body).await;
    let action = world.action(id).await;
    assert!(action.self_approval_allowed);
    assert_eq!(action.approver.as_ref().map(|a| a.as_str()), Some(me));
    assert_eq!(world.decide(id, "approve", me, false).await.0, 200);
    let trail = world.store.audit_trail(id).await.unwrap();
    assert!(trail.iter().any(|e| e.detail.as_ref().is_some_and(|d| d["self_approval"] == true)), "marked in the audit");

    // Another type, without the setting: refused as always.
    let mut body = proposal("send_email");
    body["approver"] = json!(me);
    let (status, answer) = world.propose(me, body).await;
    assert_eq!((status, answer["error"].as_str()), (403, Some("self_approval")), "{answer}");

    // Never picked: without naming themselves, the policy's approver is asked.
    let mut body = proposal("gmail.label");
    body["payload"]["message_id"] = json!("m2");
    let other = created(&world, me, body).await;
    assert_eq!(world.action(other).await.approver.as_ref().map(|a| a.as_str()), Some(APPROVER));
    // An administrator who is the requester but not the named approver may not decide it.
    assert_eq!(world.decide(other, "approve", me, true).await.0, 403);
}

#[tokio::test]
async fn a_policy_that_stops_allowing_self_approval_revokes_it_for_waiting_work() {
    let mut policy = actiongate_local::world::policy();
    policy.types.get_mut("gmail.label").unwrap().allow_self_approval = true;
    let world = World::with_policy(policy.clone());
    let me = "alice@example.com";
    let mut body = proposal("gmail.label");
    body["approver"] = json!(me);
    let id = created(&world, me, body).await;
    policy.types.get_mut("gmail.label").unwrap().allow_self_approval = false;
    world.store.put_policy(0, &policy, "root", world.now()).await.unwrap();
    let (status, answer) = world.decide(id, "approve", me, false).await;
    assert_eq!((status, answer["error"].as_str()), (403, Some("self_approval")), "{answer}");
    assert_eq!(world.action(id).await.status, Status::AwaitingApproval);
}

#[tokio::test]
async fn a_self_approval_the_policy_no_longer_allows_does_not_run() {
    let mut policy = actiongate_local::world::policy();
    policy.types.get_mut("gmail.label").unwrap().allow_self_approval = true;
    let mut world = World::with_policy(policy.clone());
    let me = "alice@example.com";
    let mut body = proposal("gmail.label");
    body["approver"] = json!(me);
    let id = created(&world, me, body).await;
    assert_eq!(world.decide(id, "approve", me, false).await.0, 200);
    policy.types.get_mut("gmail.label").unwrap().allow_self_approval = false;
    world.store.put_policy(0, &policy, "root", world.now()).await.unwrap();
    world.deliver().await;
    assert!(world.effects_of(id).is_empty(), "the requester's own approval no longer stands");
    assert_ne!(world.action(id).await.status, Status::Completed);
}

// ---------------------------------------------------------------- approver groups and quorum

const FINANCE: [&str; 3] = ["fa@example.com", "fb@example.com", "fc@example.com"];

/// The world's policy with `send_email` approved by `required` of a finance group of `members`
/// (and `rejects` rejections, if given).
fn finance_policy(members: &[&str], required: u32, rejects: Option<u32>) -> actiongate::domain::policy::Policy {
    use actiongate::domain::approvers::ApproverRef;
    let mut policy = actiongate_local::world::policy();
    policy.approver_groups.insert(
        "finance".into(),
        members.iter().map(|m| actiongate::domain::EmailAddress::parse(m).unwrap()).collect(),
    );
    let rule = policy.types.get_mut("send_email").unwrap();
    rule.approvers = vec![ApproverRef::Group("finance".into())];
    rule.approvals_required = Some(required);
    rule.reject_requires = rejects;
    policy
}

/// `send_email` approved by `required` of the finance group.
fn quorum_world(members: &[&str], required: u32) -> World {
    let policy = finance_policy(members, required, None);
    policy.check().expect("the quorum policy is valid");
    World::with_policy(policy)
}

/// The link mailed to `to` for `id`, as a token.
fn link_for(world: &World, to: &str) -> String {
    let mail =
        world.mailer.sent().into_iter().rev().find(|m| m.mail.to.iter().any(|t| t == to)).expect("a mail to them");
    mail.mail.text.split("/approvals/").nth(1).and_then(|t| t.split_whitespace().next()).unwrap().to_owned()
}

async fn click(world: &World, token: &str, decision: &str) -> (u16, String) {
    let mut form = World::request("POST", &format!("/approvals/{token}"), None, "scanner", false);
    *form.body_mut() = lambda_http::Body::Text(format!("decision={decision}"));
    let page = world.approval_http(form).await;
    let status = page.status().as_u16();
    let text = match page.body() {
        lambda_http::Body::Text(t) => t.clone(),
        _ => String::new(),
    };
    (status, text)
}

#[tokio::test]
async fn a_two_of_three_group_needs_two_distinct_people_each_counted_once() {
    let world = quorum_world(&FINANCE, 2);
    // The requester is in the group: never asked, never counted.
    let requester = FINANCE[2];
    let id = created(&world, requester, proposal("send_email")).await;
    let action = world.action(id).await;
    assert_eq!(action.status, Status::AwaitingApproval);
    let pool: Vec<&str> = action.approvers.iter().map(|a| a.as_str()).collect();
    assert_eq!(pool, vec![FINANCE[0], FINANCE[1]]);
    assert_eq!(action.approvals_required, 2);
    let mailed: Vec<Vec<String>> = world.mailer.sent().iter().map(|m| m.mail.to.clone()).collect();
    assert_eq!(mailed, vec![vec![FINANCE[0].to_owned()], vec![FINANCE[1].to_owned()]], "a link each, at intake");
    assert!(!action.approval_mail_pending);

    // Both are in their inboxes.
    for who in [FINANCE[0], FINANCE[1]] {
        let (_, inbox) = world.api("GET", "/approvals", None, who, false).await;
        assert_eq!(inbox["approvals"].as_array().unwrap().len(), 1, "{who}: {inbox}");
    }
    // The requester cannot decide by API.
    let (status, body) = world.decide(id, "approve", requester, false).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("self_approval")));

    // The first approval: recorded, still waiting.
    let first = link_for(&world, FINANCE[0]);
    let (status, page) = click(&world, &first, "approve").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("1 of 2"), "{page}");
    let after_one = world.action(id).await;
    assert_eq!(after_one.status, Status::AwaitingApproval);
    assert_eq!(after_one.votes.len(), 1);
    // The same person again, by the same link (another tab) or the API: counted once.
    let (status, page) = click(&world, &first, "approve").await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("already"), "{page}");
    let (status, body) = world.decide(id, "approve", FINANCE[0], false).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("already_decided")), "{body}");
    let (status, body) = world.decide(id, "reject", FINANCE[0], false).await;
    assert_eq!(status, 409, "changing one's mind is not a second vote: {body}");
    assert_eq!(world.action(id).await.votes.len(), 1);
    let (_, inbox) = world.api("GET", "/approvals", None, FINANCE[0], false).await;
    assert!(inbox["approvals"].as_array().unwrap().is_empty(), "decided: out of my inbox: {inbox}");
    let (_, shown) = world.api("GET", &format!("/actions/{id}"), None, requester, false).await;
    assert_eq!(shown["approvals_required"], 2);
    assert_eq!(shown["approvals"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown["approvals"][0]["approver"], FINANCE[0]);
    assert_eq!(shown["approvals"][0]["via"], "link");

    // A second person approves: queued, with both approvals on record.
    let (status, body) = world.decide(id, "approve", FINANCE[1], false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["approvals"].as_array().unwrap().len(), 2);
    assert_eq!(body["decided_by"], FINANCE[1]);
    let trail = world.store.audit_trail(id).await.unwrap();
    let vote = trail
        .iter()
        .find(|e| {
            e.from == Some(Status::AwaitingApproval) && e.to == Status::AwaitingApproval && e.reason.contains("1 of 2")
        })
        .expect("the first vote is audited");
    assert_eq!(vote.actor, FINANCE[0]);
    assert_eq!(trail.iter().filter(|e| e.to == Status::Approved).count(), 1, "one approval move");
    // The first link now shows the decision.
    let (status, _) = click(&world, &first, "approve").await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn any_rejection_rejects_a_quorum_unless_more_are_required() {
    let world = quorum_world(&FINANCE, 2);
    let id = created(&world, "alice", proposal("send_email")).await;
    assert_eq!(world.action(id).await.approvers.len(), 3);
    assert_eq!(world.decide(id, "approve", FINANCE[0], false).await.0, 200);
    let (status, body) = world.decide(id, "reject", FINANCE[1], false).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("rejected")), "{body}");

    let world = World::with_policy(finance_policy(&FINANCE, 1, Some(2)));
    let id = created(&world, "alice", proposal("send_email")).await;
    assert_eq!(world.decide(id, "reject", FINANCE[0], false).await.1["status"], "awaiting_approval");
    assert_eq!(world.decide(id, "reject", FINANCE[1], false).await.1["status"], "rejected");
}

#[tokio::test]
async fn a_request_may_name_a_group_and_a_quorum_nobody_can_reach_is_refused() {
    let world = quorum_world(&FINANCE[..2], 2);
    // Only two in the group and one of them asks: two approvals can never be given.
    let (status, body) = world.propose(FINANCE[0], proposal("send_email")).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("quorum_unreachable")), "{body}");
    let mut named = proposal("send_email");
    named["approver"] = json!("group:nobody");
    let (status, body) = world.propose("alice", named).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("approver")), "{body}");
    let mut named = proposal("gmail.label");
    named["approver"] = json!("group:finance");
    let (status, body) = world.propose("alice", named).await;
    assert_eq!(status, 201, "{body}");
    let action = world.action(id_of(&body)).await;
    assert_eq!(action.approvers.len(), 2, "everyone in the named group is asked");
    assert_eq!(action.approvals_required, 1);
    // Either of them decides it.
    assert_eq!(world.decide(action.action_id, "approve", FINANCE[1], false).await.1["status"], "queued");
}

#[tokio::test]
async fn a_quorum_mail_that_failed_is_sent_by_the_sweep_only_to_who_was_not_reached() {
    let mut world = quorum_world(&FINANCE, 2);
    world.mailer.fail_to(&[FINANCE[0]]);
    let id = created(&world, "alice", proposal("send_email")).await;
    world.mailer.fail_to(&[]);
    let action = world.action(id).await;
    assert!(action.approval_mail_pending, "one of three mails failed");
    assert_eq!(action.approval_mailed.len(), 2);
    let before = world.mailer.sent().len();
    world.advance(Duration::minutes(1));
    world.sweep().await;
    let sent = world.mailer.sent();
    assert_eq!(sent.len(), before + 1, "only the one not reached is mailed again");
    assert_eq!(sent.last().unwrap().mail.to, vec![FINANCE[0].to_owned()]);
    assert!(!world.action(id).await.approval_mail_pending);
    world.sweep().await;
    assert_eq!(world.mailer.sent().len(), before + 1);
    // Halfway: a reminder to everyone who has not decided.
    assert_eq!(world.decide(id, "approve", FINANCE[1], false).await.0, 200);
    world.advance(Duration::minutes(29));
    world.sweep().await;
    let reminders: Vec<_> =
        world.mailer.sent().into_iter().filter(|m| m.mail.subject.starts_with("Reminder:")).collect();
    let to: Vec<String> = reminders.iter().flat_map(|m| m.mail.to.clone()).collect();
    assert_eq!(to, vec![FINANCE[0].to_owned(), FINANCE[2].to_owned()]);
}

#[tokio::test]
async fn twenty_decisions_by_ten_people_count_each_once_and_end_in_one_outcome() {
    let members: Vec<String> = (0..10).map(|i| format!("m{i}@example.com")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let world = quorum_world(&refs, 10);
    let id = created(&world, "alice", proposal("send_email")).await;
    // Every member decides twice (link and API): each counts once. (Real concurrency is
    // tested against DynamoDB in e2e_approval.)
    let links: Vec<String> = refs.iter().map(|m| link_for(&world, m)).collect();
    let mut recorded = 0;
    for (i, m) in refs.iter().enumerate() {
        recorded += usize::from(click(&world, &links[i], "approve").await.0 == 200);
        recorded += usize::from(world.decide(id, "approve", m, false).await.0 == 200);
    }
    assert_eq!(recorded, 10);
    let action = world.action(id).await;
    assert_eq!(action.status, Status::Queued);
    assert_eq!(action.votes.len(), 10);
    let trail = world.store.audit_trail(id).await.unwrap();
    assert_eq!(trail.iter().filter(|e| e.to == Status::Approved).count(), 1);
    assert_eq!(
        trail
            .iter()
            .filter(|e| e.from == Some(Status::AwaitingApproval)
                && e.to == Status::AwaitingApproval
                && e.reason.contains(" of 10 approvals"))
            .count(),
        9
    );
}

#[tokio::test]
async fn a_quorum_with_a_vote_in_still_expires_on_time() {
    let mut world = quorum_world(&FINANCE, 2);
    let id = created(&world, "alice", proposal("send_email")).await;
    let first = link_for(&world, FINANCE[0]);
    assert_eq!(click(&world, &first, "approve").await.0, 200);
    world.advance(Duration::minutes(61));
    let report = world.sweep().await;
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(world.action(id).await.status, Status::Expired);
    assert_eq!(click(&world, &first, "approve").await.0, 410, "the used link says it expired");
}

#[tokio::test]
async fn a_quorum_never_waits_with_nobody_left_to_vote() {
    // 2 approvals and 2 rejections of 3 people; the requester is one of them: the two others'
    // split votes would leave it waiting, so one rejection of the two decides.
    let policy = finance_policy(&FINANCE, 2, Some(2));
    policy.check().expect("3 approvers can decide 2 approvals or 2 rejections");
    let world = World::with_policy(policy);
    let id = created(&world, FINANCE[2], proposal("send_email")).await;
    assert_eq!(world.action(id).await.rejections_required, 1);
    assert_eq!(world.decide(id, "approve", FINANCE[0], false).await.1["status"], "awaiting_approval");
    assert_eq!(world.decide(id, "reject", FINANCE[1], false).await.1["status"], "rejected");

    let too_few = finance_policy(&FINANCE, 3, Some(2));
    assert!(too_few.check().is_err(), "3 approvals or 2 rejections need 4 people");
}

// ---------------------------------------------------------------- escalation

fn iso(s: &str) -> actiongate::domain::IsoDuration {
    actiongate::domain::IsoDuration::parse(s).unwrap()
}

#[tokio::test]
async fn nobody_deciding_escalates_level_by_level_with_working_links_and_still_expires() {
    use actiongate::domain::approvers::{ApproverRef, EscalationLevel};
    let mut policy = actiongate_local::world::policy();
    let lead = "lead@example.com";
    policy
        .approver_groups
        .insert("cxo".into(), vec![actiongate::domain::EmailAddress::parse("cto@example.com").unwrap()]);
    policy.types.get_mut("send_email").unwrap().escalation = vec![
        EscalationLevel { after: iso("PT10M"), to: vec![ApproverRef::parse(lead).unwrap()] },
        EscalationLevel { after: iso("PT40M"), to: vec![ApproverRef::Group("cxo".into())] },
    ];
    policy.check().expect("a two-level chain within the hour's expiry");
    let mut world = World::with_policy(policy);
    let id = created(&world, "alice", proposal("send_email")).await;
    let first = link_for(&world, APPROVER);
    world.advance(Duration::minutes(9));
    world.sweep().await;
    assert!(world.mailer.sent().iter().all(|m| m.mail.to != vec![lead.to_owned()]), "not before its time");
    world.advance(Duration::minutes(1));
    world.sweep().await;
    let escalated = world.action(id).await;
    assert_eq!(escalated.escalation_level, 1);
    assert!(escalated.in_pool(lead) && escalated.in_pool(APPROVER));
    let to_lead = link_for(&world, lead);
    let trail = world.store.audit_trail(id).await.unwrap();
    let note = trail.iter().find(|e| e.reason.contains("escalated to lead@example.com")).expect("audited");
    assert_eq!(note.detail.as_ref().unwrap()["escalation"]["level"], 1);
    // Both links open; the lead's own is a page to decide on.
    for token in [&first, &to_lead] {
        let page =
            world.approval_http(World::request("GET", &format!("/approvals/{token}"), None, "scanner", false)).await;
        assert_eq!(page.status().as_u16(), 200);
    }
    let (_, inbox) = world.api("GET", "/approvals", None, lead, false).await;
    assert_eq!(inbox["approvals"][0]["action_id"], id.to_string(), "in the lead's inbox: {inbox}");
    // The second level: the group.
    world.advance(Duration::minutes(30));
    world.sweep().await;
    assert_eq!(world.action(id).await.escalation_level, 2);
    let to_cto = link_for(&world, "cto@example.com");
    // Still nobody: it expires (not rejected), and every link says so.
    world.advance(Duration::minutes(21));
    world.sweep().await;
    let expired = world.action(id).await;
    assert_eq!(expired.status, Status::Expired);
    assert_eq!(click(&world, &to_cto, "approve").await.0, 410);
    let trail = world.store.audit_trail(id).await.unwrap();
    assert!(
        trail.iter().any(|e| e.to == Status::Expired && e.reason.contains("approval expired")),
        "the reason says it timed out"
    );
}

#[tokio::test]
async fn an_escalated_approver_decides_and_the_work_runs() {
    use actiongate::domain::approvers::ApproverRef;
    let mut policy = actiongate_local::world::policy();
    let rule = policy.types.get_mut("send_email").unwrap();
    // The type's own approver only; the lead only once the escalation reached them.
    rule.approvers = vec![ApproverRef::parse(APPROVER).unwrap()];
    rule.escalate_after = Some(iso("PT15M"));
    rule.escalate_to = vec![ApproverRef::parse("lead@example.com").unwrap()];
    policy.check().unwrap();
    let mut world = World::with_policy(policy);
    let mut named = proposal("send_email");
    named["approver"] = json!("lead@example.com");
    let (status, body) = world.propose("alice", named).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("approver")),
        "the lead cannot be named to skip the wait: {body}"
    );
    let id = created(&world, "alice", proposal("send_email")).await;
    assert_eq!(world.decide(id, "approve", "lead@example.com", false).await.0, 404, "not asked yet");
    world.advance(Duration::minutes(15));
    world.sweep().await;
    let token = link_for(&world, "lead@example.com");
    assert_eq!(click(&world, &token, "approve").await.0, 200);
    assert_eq!(world.action(id).await.status, Status::Queued);
    world.deliver().await;
    assert_eq!(
        world.action(id).await.status,
        Status::Completed,
        "the executor's recheck counts the escalated approval"
    );
}

#[tokio::test]
async fn an_escalation_chain_is_checked() {
    use actiongate::domain::approvers::{ApproverRef, EscalationLevel};
    let mut policy = actiongate_local::world::policy();
    let level =
        |after: &str, to: &str| EscalationLevel { after: iso(after), to: vec![ApproverRef::parse(to).unwrap()] };
    policy.types.get_mut("send_email").unwrap().escalation =
        vec![level("PT30M", "a@example.com"), level("PT20M", "b@example.com")];
    assert!(policy.check().unwrap_err().0.contains("later than the one before"));
    policy.types.get_mut("send_email").unwrap().escalation = vec![level("PT2H", "a@example.com")];
    assert!(policy.check().is_err(), "after the approval expires");
    policy.types.get_mut("send_email").unwrap().escalation = vec![level("PT10M", "group:nope")];
    assert!(policy.check().unwrap_err().0.contains("nope"));
    policy.types.get_mut("send_email").unwrap().escalation = vec![];
    policy.types.get_mut("send_email").unwrap().escalate_after = Some(iso("PT10M"));
    assert!(policy.check().is_err(), "escalate_after without escalate_to");
}

// ---------------------------------------------------------------- delegation

#[tokio::test]
async fn an_approver_away_delegates_and_the_delegate_receives_and_decides_the_next_request() {
    use actiongate::domain::approvers::ApproverRef;
    let mut policy = actiongate_local::world::policy();
    // Only the approver is allowed by the type: the deputy decides only as their delegate.
    policy.types.get_mut("send_email").unwrap().approvers = vec![ApproverRef::parse(APPROVER).unwrap()];
    let mut world = World::with_policy(policy);
    let deputy = "deputy@example.com";
    let path = format!("/approvers/{APPROVER}/delegation");
    let until = actiongate::domain::time::format_time(world.now() + Duration::days(7));
    let body = json!({"to": deputy, "until": until});
    assert_eq!(world.api("PUT", &path, Some(body.clone()), "someone@example.com", false).await.0, 403, "not theirs");
    let past = json!({"to": deputy, "until": "2020-01-01T00:00:00Z"});
    assert_eq!(world.api("PUT", &path, Some(past), APPROVER, false).await.1["field"], "until");
    let outsider = json!({"to": "friend@elsewhere.test", "until": until});
    assert_eq!(
        world.api("PUT", &path, Some(outsider), APPROVER, false).await.1["field"],
        "to",
        "only someone the policy could ask"
    );
    let (status, set) = world.api("PUT", &path, Some(body), APPROVER, false).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!((set["delegation"]["to"].as_str(), set["delegation"]["active"].as_bool()), (Some(deputy), Some(true)));

    let id = created(&world, "alice", proposal("send_email")).await;
    let action = world.action(id).await;
    assert_eq!(action.pool().iter().map(|a| a.as_str()).collect::<Vec<_>>(), vec![deputy], "the delegate is asked");
    assert_eq!(action.delegated[0].from, APPROVER);
    let token = link_for(&world, deputy);
    let (_, inbox) = world.api("GET", "/approvals", None, deputy, false).await;
    assert_eq!(inbox["approvals"][0]["action_id"], id.to_string());
    let trail = world.store.audit_trail(id).await.unwrap();
    assert!(trail.iter().any(|e| e.detail.as_ref().is_some_and(|d| d["delegated"][0]["to"] == deputy)), "audited");
    assert_eq!(click(&world, &token, "approve").await.0, 200);
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Completed, "the delegate's approval counts at the recheck");

    // A request still waiting when the delegation ends: the delegate's link no longer decides,
    // the approver does again.
    let mut pending = proposal("send_email");
    pending["payload"]["subject"] = json!("Pending");
    let waiting = created(&world, "alice", pending).await;
    let late_link = link_for(&world, deputy);
    // Ended: the next request goes to the approver again; both changes are on their stream.
    assert_eq!(world.api("DELETE", &path, None, APPROVER, false).await.1["delegation"], json!(null));
    assert_eq!(click(&world, &late_link, "approve").await.0, 403, "the delegation ended");
    let (status, body) = world.decide(waiting, "approve", deputy, false).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("delegation_ended")), "{body}");
    let (status, body) = world.decide(waiting, "approve", APPROVER, false).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("queued")), "{body}");
    let mut again = proposal("send_email");
    again["payload"]["subject"] = json!("Second");
    let next = created(&world, "alice", again).await;
    assert_eq!(world.action(next).await.approver.as_ref().map(|a| a.as_str()), Some(APPROVER));
    let (_, audit) = world.api("GET", &format!("/admin/users/approver:{APPROVER}/audit"), None, "root", true).await;
    let moves: Vec<&str> = audit["events"].as_array().unwrap().iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(moves, vec!["delegation_set", "delegation_ended"], "{audit}");
}

// ---------------------------------------------------------------- completion mail

#[tokio::test]
async fn approved_work_tells_the_requester_and_the_notify_list_once_when_it_completes_or_fails() {
    use actiongate::domain::approvers::ApproverRef;
    let mut policy = actiongate_local::world::policy();
    let rule = policy.types.get_mut("send_email").unwrap();
    rule.completion_mail = true;
    rule.notify = vec![ApproverRef::parse("ops@example.com").unwrap()];
    policy.check().unwrap();
    let mut world = World::with_policy(policy);
    let me = "alice@example.com";
    let told = |world: &World, subject: &str| -> Vec<Vec<String>> {
        world.mailer.sent().iter().filter(|m| m.mail.subject.starts_with(subject)).map(|m| m.mail.to.clone()).collect()
    };

    let id = created(&world, me, proposal("send_email")).await;
    assert_eq!(world.decide(id, "approve", APPROVER, false).await.0, 200);
    world.deliver().await;
    assert_eq!(world.action(id).await.status, Status::Completed);
    // One mail each; ops' server is down at first: only ops is tried again, later.
    world.mailer.fail_to(&["ops@example.com"]);
    world.sweep().await;
    assert_eq!(told(&world, "Completed:"), vec![vec![me.to_owned()]]);
    world.mailer.fail_to(&[]);
    world.advance(Duration::minutes(2));
    world.sweep().await;
    assert_eq!(told(&world, "Completed:"), vec![vec![me.to_owned()], vec!["ops@example.com".to_owned()]]);
    world.advance(Duration::minutes(30));
    world.sweep().await;
    assert_eq!(told(&world, "Completed:").len(), 2, "once each");
    let trail = world.store.audit_trail(id).await.unwrap();
    assert!(trail.iter().any(|e| e.reason.starts_with("completion mail sent to alice@example.com")), "audited");

    // A failure is told too.
    let mut other = proposal("send_email");
    other["payload"]["subject"] = json!("Will fail");
    let failing = created(&world, me, other).await;
    world.script(failing, 0, &[Behavior::Permanent]);
    assert_eq!(world.decide(failing, "approve", APPROVER, false).await.0, 200);
    world.deliver().await;
    assert_eq!(world.action(failing).await.status, Status::Failed);
    world.sweep().await;
    assert_eq!(told(&world, "Failed:").len(), 2);

    // Work that was never approved (rejected) tells nobody.
    let mut third = proposal("send_email");
    third["payload"]["subject"] = json!("Rejected");
    let rejected = created(&world, me, third).await;
    assert_eq!(world.decide(rejected, "reject", APPROVER, false).await.0, 200);
    world.advance(Duration::minutes(5));
    world.sweep().await;
    assert_eq!(told(&world, "Completed:").len() + told(&world, "Failed:").len(), 4, "two each for the first two");
}

// ---------------------------------------------------------------- edit before approve

/// The finance group approves `send_email` (one of them); more than one recipient needs two,
/// more than five is left to a human.
fn edit_world() -> World {
    use actiongate::domain::payload_rules::PayloadThreshold;
    let mut policy = finance_policy(&FINANCE, 1, None);
    policy.types.get_mut("send_email").unwrap().payload_thresholds = vec![
        PayloadThreshold { field: "/to".into(), above: 1.0, tier: None, approvals_required: Some(2) },
        PayloadThreshold {
            field: "/to".into(),
            above: 5.0,
            tier: Some(actiongate::domain::Tier::Manual),
            approvals_required: None,
        },
    ];
    policy.check().expect("the edit policy is valid");
    World::with_policy(policy)
}

fn mail_to(recipients: &[&str]) -> serde_json::Value {
    json!({"to": recipients, "subject": "hello", "text": "hi"})
}

async fn decide_with(world: &World, id: ActionId, user: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let req = World::request("POST", &format!("/actions/{id}/approve"), Some(body), user, false);
    World::reply(world.approval_http(req).await)
}

async fn approve_with(world: &World, id: ActionId, user: &str, payload: serde_json::Value) -> (u16, serde_json::Value) {
    // Named as read: the version this approval is of.
    let digest = world.action(id).await.plan_digest();
    decide_with(world, id, user, json!({"reason": "fixed the list", "payload": payload, "plan_digest": digest})).await
}

#[tokio::test]
async fn an_edit_that_crosses_a_threshold_needs_the_extra_approval_and_kills_the_old_links() {
    let mut world = edit_world();
    let id = created(&world, "alice", proposal("send_email")).await;
    let action = world.action(id).await;
    assert_eq!((action.status, action.approvals_required, action.approvers.len()), (Status::AwaitingApproval, 1, 3));
    let old_digest = action.plan_digest();
    let old_link = link_for(&world, FINANCE[1]);

    // fa@ adds a recipient: two recipients need two approvals; fa@'s own is one of them.
    let edited = mail_to(&["bob@example.com", "carol@example.com"]);
    let (status, body) = approve_with(&world, id, FINANCE[0], edited.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "awaiting_approval");
    assert_eq!(body["payload"], edited);
    assert_eq!(body["approvals_required"], 2);
    assert_eq!(body["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(body["edits"][0]["by"], FINANCE[0]);
    assert_eq!(body["edits"][0]["fields"], json!(["/to/1"]));
    assert!(body["reasons"].as_array().unwrap().contains(&json!("payload_above_threshold")), "{body}");
    let action = world.action(id).await;
    assert_eq!(action.steps[0].kind.payload(), Some(&edited), "the step runs what was approved");
    assert!(action.approval_mail_pending);

    // An API decision must now name the version it is of: one made on the old payload (no
    // digest, or the old one) is refused with the current payload to read.
    let (status, refused) = decide_with(&world, id, FINANCE[2], json!({})).await;
    assert_eq!((status, refused["error"].as_str()), (409, Some("payload_changed")), "{refused}");
    assert_eq!(refused["payload"], edited);
    let (status, refused) = decide_with(&world, id, FINANCE[2], json!({"plan_digest": old_digest})).await;
    assert_eq!((status, refused["error"].as_str()), (409, Some("payload_changed")), "{refused}");
    // The editor repeating the same payload is not a second vote.
    let (status, again) = approve_with(&world, id, FINANCE[0], edited.clone()).await;
    assert_eq!((status, again["error"].as_str()), (409, Some("already_decided")), "{again}");

    // Links to the old payload no longer decide anything.
    let (status, page) = click(&world, &old_link, "approve").await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("changed"), "{page}");
    assert_eq!(world.action(id).await.votes.len(), 1);

    // The sweep asks everyone else again at once, with links for the new payload.
    let before = world.mailer.sent().len();
    world.sweep().await;
    let asked: Vec<String> = world.mailer.sent()[before..].iter().flat_map(|m| m.mail.to.clone()).collect();
    assert_eq!(asked, vec![FINANCE[1].to_owned(), FINANCE[2].to_owned()], "not the editor");
    let new_link = link_for(&world, FINANCE[1]);
    let (status, page) = click(&world, &new_link, "approve").await;
    assert_eq!(status, 200, "{page}");
    let done = world.action(id).await;
    assert_eq!(done.status, Status::Queued);
    assert_eq!(done.votes.len(), 2);

    // The trail says who changed what, from what to what.
    let trail = world.store.audit_trail(id).await.unwrap();
    let edit = trail.iter().find(|e| e.reason.starts_with("payload edited by")).expect("the edit is audited");
    assert_eq!(edit.actor, FINANCE[0]);
    let detail = edit.detail.as_ref().unwrap();
    assert_eq!(detail["edit"]["changes"][0], json!({"op": "add", "path": "/to/1", "value": "carol@example.com"}));
    assert_eq!(detail["approvals_required"], 2);
    assert_ne!(detail["edit"]["plan_digest_before"], detail["edit"]["plan_digest_after"]);
    let seqs: Vec<u64> = trail.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "one ordered trail: {seqs:?}");
}

#[tokio::test]
async fn an_edit_is_checked_like_a_proposal_and_refused_changes_leave_the_action_alone() {
    let world = edit_world();
    let id = created(&world, "alice", proposal("send_email")).await;
    let version = world.action(id).await.version;

    let (status, body) =
        approve_with(&world, id, FINANCE[0], json!({"to": ["nope"], "subject": "s", "text": "t"})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    assert_eq!(body["field"], "payload.to[0]");
    let six: Vec<String> = (0..6).map(|i| format!("r{i}@example.com")).collect();
    let many: Vec<&str> = six.iter().map(String::as_str).collect();
    let (status, body) = approve_with(&world, id, FINANCE[0], mail_to(&many)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("edit_needs_human")), "{body}");
    assert!(body["reasons"].as_array().unwrap().contains(&json!("payload_above_threshold")));
    let (status, body) = approve_with(&world, id, "alice", mail_to(&["x@example.com"])).await;
    assert_eq!(status, 403, "the requester edits nothing: {body}");
    let req = World::request(
        "POST",
        &format!("/actions/{id}/reject"),
        Some(json!({"payload": mail_to(&["x@example.com"])})),
        FINANCE[0],
        false,
    );
    let (status, body) = World::reply(world.approval_http(req).await);
    assert_eq!((status, body["field"].as_str()), (400, Some("payload")), "{body}");
    let untouched = world.action(id).await;
    assert_eq!((untouched.version, untouched.votes.len(), untouched.edits.len()), (version, 0, 0));

    // The same payload is a plain approval.
    let (status, body) = approve_with(&world, id, FINANCE[0], proposal("send_email")["payload"].clone()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("queued")), "{body}");
    assert!(body["edits"].as_array().unwrap().is_empty());

    // A plan is proposed again instead.
    let plan = json!({"steps": [
        {"action_type": "send_email", "payload": mail_to(&["bob@example.com"])},
        {"wait_for": "PT1H"},
        {"action_type": "send_email", "payload": mail_to(&["bob@example.com"])},
    ], "confidence": 0.9});
    let id = created(&world, "alice", plan).await;
    let (status, body) = approve_with(&world, id, FINANCE[0], mail_to(&["x@example.com"])).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("edit_unsupported")), "{body}");
}

#[tokio::test]
async fn the_approval_page_offers_the_edit_and_its_form_approves_the_change() {
    let world = edit_world();
    let id = created(&world, "alice", proposal("send_email")).await;
    let token = link_for(&world, FINANCE[0]);
    let page = world.approval_http(World::request("GET", &format!("/approvals/{token}"), None, "scanner", false)).await;
    let html = match page.body() {
        lambda_http::Body::Text(t) => t.clone(),
        _ => String::new(),
    };
    assert!(html.contains("Approve with these changes") && html.contains("name=\"payload\""), "{html}");
    assert!(html.contains("bob@example.com"), "the form starts from the payload as it is");

    let edited = json!({"to": ["bob@example.com"], "subject": "hello, corrected", "text": "hi"});
    let encoded: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("decision", "approve")
        .append_pair("payload", &edited.to_string())
        .finish();
    let mut form = World::request("POST", &format!("/approvals/{token}"), None, "scanner", false);
    *form.body_mut() = lambda_http::Body::Text(encoded);
    let page = world.approval_http(form).await;
    assert_eq!(page.status().as_u16(), 200);
    let action = world.action(id).await;
    assert_eq!((action.status, &action.payload), (Status::Queued, &edited), "one recipient: one approval");
    assert_eq!(action.edits[0].fields, vec!["/subject".to_owned()]);

    // Bad JSON in the form is a page saying so; nothing changes.
    let id = created(
        &world,
        "alice",
        json!({"action_type": "send_email", "payload": mail_to(&["dan@example.com"]), "confidence": 0.9}),
    )
    .await;
    let token = link_for(&world, FINANCE[0]);
    let mut form = World::request("POST", &format!("/approvals/{token}"), None, "scanner", false);
    *form.body_mut() = lambda_http::Body::Text("decision=approve&payload=%7Bnope".into());
    assert_eq!(world.approval_http(form).await.status().as_u16(), 400);
    assert_eq!(world.action(id).await.status, Status::AwaitingApproval);
}

#[tokio::test]
async fn an_edit_asks_again_only_people_the_new_decision_allows_and_never_a_delegator_beside_their_delegate() {
    let world = edit_world();
    // fa is away: fb stands in for fa, so fa is not asked; after an edit fa is still not asked.
    let until = actiongate::domain::time::format_time(world.now() + Duration::days(3));
    let (status, body) = world
        .api(
            "PUT",
            &format!("/approvers/{}/delegation", FINANCE[0]),
            Some(json!({"to": "ops@example.com", "until": until})),
            "root",
            true,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = created(&world, "alice", proposal("send_email")).await;
    let pool: Vec<String> = world.action(id).await.approvers.iter().map(|a| a.as_str().to_owned()).collect();
    assert!(!pool.contains(&FINANCE[0].to_owned()) && pool.contains(&"ops@example.com".to_owned()), "{pool:?}");
    let (status, body) = approve_with(&world, id, FINANCE[1], mail_to(&["bob@example.com", "carol@example.com"])).await;
    assert_eq!(status, 200, "{body}");
    let pool: Vec<String> = world.action(id).await.approvers.iter().map(|a| a.as_str().to_owned()).collect();
    assert!(!pool.contains(&FINANCE[0].to_owned()), "the delegator does not come back beside the delegate: {pool:?}");
}

// ---------------------------------------------------------------- the console's API

#[tokio::test]
async fn admin_listings_and_the_stats_range_refuse_what_they_cannot_serve() {
    let world = World::new();
    let id = created(&world, "alice", proposal("send_email")).await;
    let (status, _) = world.api("GET", "/admin/actions", None, "alice", false).await;
    assert_eq!(status, 403, "administrators only");
    let (status, page) = world.api("GET", "/admin/actions?status=awaiting_approval", None, "root", true).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["actions"][0]["action_id"], id.to_string());
    let (status, page) =
        world.api("GET", "/actions?action_type=send_email&execution=approved", None, "alice", false).await;
    assert_eq!((status, page["actions"].as_array().map(Vec::len)), (200, Some(1)), "{page}");
    let (status, page) = world.api("GET", "/actions?action_type=send_email&user=bob", None, "alice", false).await;
    assert_eq!((status, page["field"].as_str()), (400, Some("user")), "one's own only: {page}");
    for bad in [
        "/admin/actions?from=-262144-01-01",
        "/admin/actions?to=0001-01-01",
        "/admin/actions?from=2026-01-01&to=2026-12-01",
        "/admin/actions?execution=sometimes",
        "/admin/actions?status=nope",
        "/admin/actions?to=+10895-06-01T00:00:00Z",
        "/admin/actions?cursor=garbage",
    ] {
        let (status, body) = world.api("GET", bad, None, "root", true).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // One status's listing has no range limit (a manual task may wait for months).
    let (status, _) = world.api("GET", "/admin/actions?status=manual&from=2020-01-01", None, "root", true).await;
    assert_eq!(status, 200);

    let (status, stats) = world.api("GET", "/stats?from=2026-02-20&to=2026-03-01", None, "alice", false).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["days"].as_array().map(Vec::len), Some(10));
    assert_eq!(stats["days"][0]["day"], "2026-02-20");
    for bad in [
        "/stats?from=2026-03-02&to=2026-03-01",
        "/stats?from=2025-01-01&to=2026-03-01",
        "/stats?to=-262144-01-01",
        "/stats?from=nope",
    ] {
        assert_eq!(world.api("GET", bad, None, "alice", false).await.0, 400, "{bad}");
    }
}
