//! Property tests of the whole lifecycle on the in-memory ports: random sequences of
//! proposals (every tier, scheduled work, plans with waits), decisions (some by the requester),
//! cancellations, handler outcomes (success, transient, permanent, unknown, a crash after the
//! effect), a queue that loses sends (a crash between a write and its message), duplicate and
//! stale deliveries, sweeps with the clock moving, policy changes (a type
//! blocked or unblocked, the kill switch) and rollbacks. After each sequence the world settles,
//! and the invariants must hold:
//!
//! - every action ends in a terminal state or one that legitimately waits (manual work; tier-1
//!   work held while the breaker is open or automatic execution is off);
//! - no side effect ran twice;
//! - every move is legal and audited: the trail starts at creation, each event starts where
//!   the last ended, the sequence only grows, and the last event is where the action is;
//! - automatic execution never started more than its hourly limit;
//! - nothing ran before its time or while the policy in force blocked its type;
//! - no requester decided their own action.
//!
//! Bounded: `PROPTEST_CASES` (default 48) sequences of at most 24 operations each.

use actiongate::domain::action::StepKind;
use actiongate::domain::{Action, Status};
use actiongate::ports::queue::ExecuteMessage;
use actiongate::ports::store::*;
use actiongate::services::rollback::RollbackRequest;
use actiongate_local::world::{id_of, proposal, Behavior, World};
use chrono::Duration;
use proptest::prelude::*;
use serde_json::json;

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const APPROVER: &str = "approvals@example.com";
const PER_HOUR: usize = 5;

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Tier 1, runs at once.
    Auto,
    /// Tier 1, scheduled a while ahead.
    Scheduled(u16),
    /// Tier 2, irreversible and not idempotent.
    Approval,
    /// Tier 3.
    Manual,
    /// Tier 1 actions around a wait.
    PlanWithWait,
}

#[derive(Debug, Clone)]
enum Op {
    Propose {
        user: usize,
        kind: Kind,
        first: Vec<Behavior>,
        entity: Option<u8>,
    },
    Decide {
        pick: usize,
        approve: bool,
        by_requester: bool,
    },
    /// A decision through the emailed link's form, as the approver (or a link addressed to
    /// the requester).
    DecideByLink {
        pick: usize,
        approve: bool,
    },
    Cancel {
        pick: usize,
    },
    Tick {
        minutes: u16,
    },
    Deliver,
    Redeliver {
        pick: usize,
        step: usize,
    },
    Sweep,
    Block {
        pick_type: usize,
        blocked: bool,
    },
    KillSwitch {
        on: bool,
    },
    /// The queue refuses sends (a crash between a store write and its message): the sweep
    /// must find the work again.
    QueueDown {
        down: bool,
    },
    Rollback {
        pick: usize,
    },
}

fn behavior() -> impl Strategy<Value = Behavior> {
    prop_oneof![
        6 => Just(Behavior::Succeed),
        2 => Just(Behavior::Transient),
        1 => Just(Behavior::Permanent),
        1 => Just(Behavior::EffectThenUnknown),
        1 => Just(Behavior::EffectThenCrash),
        1 => (1u64..3600).prop_map(Behavior::Busy),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Auto),
        1 => (1u16..240).prop_map(Kind::Scheduled),
        3 => Just(Kind::Approval),
        1 => Just(Kind::Manual),
        1 => Just(Kind::PlanWithWait),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..USERS.len(), kind(), prop::collection::vec(behavior(), 0..3), prop::option::of(0u8..3))
            .prop_map(|(user, kind, first, entity)| Op::Propose { user, kind, first, entity }),
        3 => (any::<usize>(), any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(pick, approve, by_requester)| Op::Decide { pick, approve, by_requester }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, approve)| Op::DecideByLink { pick, approve }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        3 => (1u16..90).prop_map(|minutes| Op::Tick { minutes }),
        3 => Just(Op::Deliver),
        1 => (any::<usize>(), 0usize..3).prop_map(|(pick, step)| Op::Redeliver { pick, step }),
        2 => Just(Op::Sweep),
        1 => (0usize..3, any::<bool>()).prop_map(|(pick_type, blocked)| Op::Block { pick_type, blocked }),
        1 => any::<bool>().prop_map(|on| Op::KillSwitch { on }),
        1 => any::<bool>().prop_map(|down| Op::QueueDown { down }),
        1 => any::<usize>().prop_map(|pick| Op::Rollback { pick }),
    ]
}

/// Replaces the policy in force (as `PUT /admin/policy` does).
async fn change_policy(world: &World, change: impl FnOnce(&mut actiongate::policy::Policy)) {
    let current = world.store.policy_override_raw().await.unwrap();
    let mut policy = (*world.policies.current().await).clone();
    change(&mut policy);
    let version = current.map_or(0, |p| p.version);
    world.store.put_policy(version, &policy, "admin", world.now()).await.unwrap();
}

/// One proposal the sequence made: its id, its requester and whether it was tier 1 when made.
type Made = (actiongate::domain::ActionId, usize, bool);

async fn apply(world: &mut World, ids: &mut Vec<Made>, op: &Op) {
    let pick = |ids: &[Made], i: usize| (!ids.is_empty()).then(|| (ids[i % ids.len()].0, ids[i % ids.len()].1));
    match op {
        Op::Propose { user, kind, first, entity } => {
            let mut body = match kind {
                Kind::Auto | Kind::Scheduled(_) => proposal("gmail.archive"),
                Kind::Approval => proposal("send_email"),
                Kind::Manual => proposal("gmail.delete"),
                Kind::PlanWithWait => json!({"steps": [
                    {"action_type": "gmail.archive", "payload": {"message_id": "m1"}},
                    {"wait_for": "PT1H"},
                    {"action_type": "gmail.archive", "payload": {"message_id": "m2"}},
                ], "confidence": 0.95}),
            };
            if let Kind::Scheduled(minutes) = kind {
                let at = world.now() + Duration::minutes(i64::from(*minutes));
                body["scheduled_for"] = json!(actiongate::domain::time::format_time(at));
            }
            if let Some(e) = entity {
                body["rate_limit_key"] = json!(format!("entity-{e}"));
            }
            let (status, answer) = world.propose(USERS[*user], body).await;
            assert!(
                status < 300 || matches!(status, 403 | 409 | 429),
                "a proposal is accepted or refused with a reason: {status} {answer}"
            );
            // A blocked proposal is refused but recorded (403 with its id).
            if answer["action_id"].is_string() {
                let id = id_of(&answer);
                world.script(id, 0, first);
                let automatic = matches!(kind, Kind::Auto | Kind::Scheduled(_) | Kind::PlanWithWait);
                ids.push((id, *user, automatic));
            }
        }
        Op::Decide { pick: i, approve, by_requester } => {
            let Some((id, user)) = pick(ids, *i) else { return };
            let verb = if *approve { "approve" } else { "reject" };
            let (status, body) = if *by_requester {
                // Even an administrator never decides what they asked for.
                world.decide(id, verb, USERS[user], true).await
            } else {
                world.decide(id, verb, APPROVER, false).await
            };
            if *by_requester {
                assert_eq!(status, 403, "the requester decided their own action: {body}");
            } else {
                assert!(status < 500, "{status} {body}");
            }
        }
        Op::DecideByLink { pick: i, approve } => {
            let Some((id, _)) = pick(ids, *i) else { return };
            // The newest mail about this action that carries a link.
            let mails = world.mailer.sent();
            let Some(token) = mails.iter().rev().find_map(|m| {
                let text = &m.mail.text;
                text.contains(&id.to_string())
                    .then(|| text.split("/approvals/").nth(1)?.split_whitespace().next().map(str::to_owned))
                    .flatten()
            }) else {
                return;
            };
            let decision = if *approve { "approve" } else { "reject" };
            let mut form = World::request("POST", &format!("/approvals/{token}"), None, APPROVER, false);
            *form.body_mut() = lambda_http::Body::Text(format!("decision={decision}"));
            let page = world.approval_http(form).await;
            assert!(page.status().as_u16() < 500, "a link decision never fails with a 5xx");
        }
        Op::Cancel { pick: i } => {
            let Some((id, user)) = pick(ids, *i) else { return };
            let (status, body) =
                world.api("POST", &format!("/actions/{id}/cancel"), Some(json!({})), USERS[user], false).await;
            assert!(status < 500, "{status} {body}");
        }
        Op::Tick { minutes } => world.advance(Duration::minutes(i64::from(*minutes))),
        Op::Deliver => world.deliver().await,
        Op::Redeliver { pick: i, step } => {
            let Some((id, _)) = pick(ids, *i) else { return };
            world.run_executor(&ExecuteMessage::step(id, *step)).await;
        }
        Op::Sweep => {
            world.sweep().await;
        }
        Op::Block { pick_type, blocked } => {
            let name = ["gmail.archive", "send_email", "gmail.label"][*pick_type];
            change_policy(world, |p| {
                if let Some(rule) = p.types.get_mut(name) {
                    rule.blocked = *blocked;
                }
            })
            .await;
        }
        Op::KillSwitch { on } => change_policy(world, |p| p.auto_execution.enabled = !*on).await,
        Op::QueueDown { down } => world.queue.fail_sends(*down),
        Op::Rollback { pick: i } => {
            let Some((id, user)) = pick(ids, *i) else { return };
            let action = world.action(id).await;
            if matches!(action.status, Status::Completed | Status::Failed) {
                let request = RollbackRequest { reason: None, partial: true };
                let _ = world.rollback.roll_back_by(action, &request, USERS[user], None).await;
            }
        }
    }
}

/// The checks every settled world must pass.
async fn check(world: &World, ids: &[Made]) {
    let policy = world.policies.current().await;
    let breaker_open = world.store.breaker(10).await.unwrap().is_open();
    let auto_off = !policy.auto_execution.enabled;
    let mut starts = Vec::new();
    for (id, user, automatic) in ids {
        let action: Action = world.action(*id).await;
        // Terminal, or waiting for a reason that does not pass with time.
        let settled = match action.status {
            Status::Completed
            | Status::Rejected
            | Status::Expired
            | Status::Cancelled
            | Status::Blocked
            | Status::Manual
            | Status::DoneManually
            | Status::Dismissed
            | Status::RolledBack
            | Status::RollbackFailed => true,
            // A compensation owed is started (or handed to a human) by then.
            Status::Failed => !action.compensation_due,
            Status::Pending => breaker_open || auto_off,
            _ => false,
        };
        assert!(settled, "{} is still {} (hold: {:?})", id, action.status, action.hold_reason);
        // The trail: one event per move, legal, unbroken, ending where the action is.
        let trail = world.store.audit_trail(*id).await.unwrap();
        let mut from = None;
        let mut seq = 0;
        for event in &trail {
            // The sequence is the version the move wrote; bookkeeping writes (a mail recorded
            // as delivered, a resend, rollback progress) take versions without moving it.
            assert!(event.seq > seq, "{id}: the trail's sequence only grows: {trail:?}");
            seq = event.seq;
            assert_eq!(event.from, from, "{id}: each move starts where the last ended");
            // A note (`from` = `to`: a mail sent, why it still waits) moves nothing.
            if let Some(f) = from.filter(|f| *f != event.to) {
                assert!(f.transition_to(event.to).is_ok(), "{id}: {f} → {} is not a legal move", event.to);
            }
            from = Some(event.to);
            if matches!(event.to, Status::Approved | Status::Rejected) && event.actor != "sweep" {
                let requester = USERS[*user];
                assert!(
                    event.actor != requester && !event.actor.starts_with(&format!("{requester}@")),
                    "{id}: the requester {requester} decided it ({})",
                    event.actor
                );
            }
        }
        assert_eq!(from, Some(action.status), "{id}: the trail ends where the action is");
        assert!(seq <= action.version && trail.first().is_some_and(|e| e.from.is_none()), "{id}: {trail:?}");
        // When work proposed as tier 1 first started (entered `queued`), for the hourly limit.
        if *automatic {
            if let Some(start) = trail.iter().find(|e| e.to == Status::Queued) {
                starts.push(start.at);
            }
        }
        // Side effects: at most once each (a repeat only with the same idempotency key, to a
        // target that honours it), never early, never while blocked, tier-1 work never while
        // automatic execution was off.
        let calls = world.calls_of(*id);
        for (i, call) in calls.iter().enumerate() {
            for earlier in calls[..i].iter().filter(|e| e.step == call.step) {
                assert!(
                    call.idempotent && earlier.key == call.key,
                    "{id}: step {} took effect twice: {calls:?}",
                    call.step
                );
            }
        }
        let effects = world.effects_of(*id);
        if action.status == Status::Completed {
            let steps: Vec<usize> =
                action.steps.iter().filter(|s| matches!(s.kind, StepKind::Action { .. })).map(|s| s.index).collect();
            let done: Vec<usize> = effects.iter().map(|e| e.step).collect();
            assert_eq!(done, steps, "{id}: completed, so each action step took effect once, in order");
        }
        for effect in &effects {
            assert!(!effect.blocked_then, "{id}: ran while the policy blocked {}", effect.action_type);
            assert!(
                !(effect.auto_off_then && *automatic && action.decided_by.is_none()),
                "{id}: automatic work ran while automatic execution was off"
            );
            if let Some(at) = action.scheduled_for {
                assert!(effect.at >= at, "{id}: ran at {} before {at}", effect.at);
            }
        }
        let waits: Vec<usize> =
            action.steps.iter().filter(|s| matches!(s.kind, StepKind::WaitFor { .. })).map(|s| s.index).collect();
        for w in waits {
            let before = effects.iter().find(|e| e.step == w - 1);
            let after = effects.iter().find(|e| e.step == w + 1);
            if let (Some(b), Some(a)) = (before, after) {
                assert!(a.at >= b.at + Duration::hours(1), "{id}: the wait was cut short: {effects:?}");
            }
        }
    }
    // Automatic execution never started more than its hourly limit in any clock hour.
    starts.sort();
    for (i, t) in starts.iter().enumerate() {
        let hour = t.timestamp() / 3600;
        let in_hour = starts[i..].iter().take_while(|s| s.timestamp() / 3600 == hour).count();
        assert!(in_hour <= PER_HOUR, "{in_hour} automatic starts in the hour of {t}");
    }
}

fn run(ops: Vec<Op>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let mut world = World::new();
        let mut ids: Vec<Made> = Vec::new();
        for op in &ops {
            apply(&mut world, &mut ids, op).await;
        }
        // Settle: the queue is back, the infrastructure keeps running and the clock moves for a day.
        world.queue.fail_sends(false);
        world.settle(48, Duration::minutes(30)).await;
        check(&world, &ids).await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_lifecycle_invariants_hold(ops in prop::collection::vec(op(), 1..24)) {
        run(ops);
    }
}
