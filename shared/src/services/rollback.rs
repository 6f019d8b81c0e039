//! Rollback: undoes the executed steps of a completed or failed action, newest first, through
//! each handler's rollback from the stored snapshot.
//!
//! Irreversible steps (a sent email) make the request a 409 `not_reversible` naming them,
//! unless the caller asks for a partial rollback, whose result lists what was not undone.
//! Progress is saved after every step, so a rollback that stopped half-way continues where it
//! was, and asking twice is harmless.

use crate::domain::action::{StepKind, StepState};
use crate::domain::{Action, ActionId, Status};
use crate::ports::api::{ApiError, Call, Reply};
use crate::ports::clock::Clock;
use crate::ports::handler::{Dependencies, Registry, Reversibility, StepContext};
use crate::ports::store::{Store, StoredSnapshot, TransitionError};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long one step's undo may take, and how far the lease reaches past it.
const UNDO_BOUND: std::time::Duration = std::time::Duration::from_secs(20);
const LEASE_SECS: i64 = 30;

/// Why a completed step is not undone.
const IRREVERSIBLE: &str = "irreversible";
const EXPIRED: &str = "rollback_data_expired";
/// The step's target changed since it ran (a connector pointed elsewhere).
const TARGET_CHANGED: &str = "target_changed";

struct Undo {
    index: usize,
    action_type: String,
    payload: Value,
    blocker: Option<&'static str>,
}

/// A rollback request, from the API (`{reason?, partial?}`) or a direct invocation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default)]
    pub reason: Option<String>,
    /// Undo what can be undone and report the rest, instead of refusing.
    #[serde(default)]
    pub partial: bool,
}

/// A direct invocation: `{action_id, reason?, partial?}` (operators, automation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectRollback {
    pub action_id: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub partial: bool,
}

pub struct RollbackService {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    deps: Arc<Dependencies>,
    clock: Arc<dyn Clock>,
}

impl RollbackService {
    pub fn new(
        store: Arc<dyn Store>,
        registry: impl Into<Arc<Registry>>,
        deps: impl Into<Arc<Dependencies>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { store, registry: registry.into(), deps: deps.into(), clock }
    }

    /// `POST /actions/{id}/rollback`: the owner or an admin.
    /// `POST /actions/{id}/rollback` by the owner or an administrator (`{reason?, partial?}`).
    pub async fn request(&self, call: &Call, id: &str, deadline: DateTime<Utc>) -> Result<Reply, ApiError> {
        let identity = call.identity()?;
        let body = call.optional_json_body(16 * 1024)?;
        let request: RollbackRequest =
            serde_json::from_value(body).map_err(|e| ApiError::invalid("$", e.to_string()))?;
        let action = self.load(id).await?;
        if action.user_id != identity.user && !identity.admin {
            return Err(ApiError::NotFound("action"));
        }
        let done = self.roll_back_by(action, &request, identity.user.as_str(), Some(deadline)).await?;
        Ok(Reply::json(200, &with_outcome(&done)))
    }

    /// A direct invocation; errors come back as `{error, message}` values.
    pub async fn invoke(&self, payload: Value, deadline: DateTime<Utc>) -> Value {
        let result = async {
            let request: DirectRollback =
                serde_json::from_value(payload).map_err(|e| ApiError::invalid("$", e.to_string()))?;
            let action = self.load(&request.action_id).await?;
            let request = RollbackRequest { reason: request.reason, partial: request.partial };
            let done = self.roll_back_by(action, &request, "operator", Some(deadline)).await?;
            Ok::<Value, ApiError>(with_outcome(&done))
        }
        .await;
        result.unwrap_or_else(|e| json!({"error": e.code(), "message": e.to_string()}))
    }

    async fn load(&self, id: &str) -> Result<Action, ApiError> {
        let id = ActionId::parse(id).ok_or(ApiError::NotFound("action"))?;
        self.store.get_action(id).await.map_err(ApiError::internal)?.ok_or(ApiError::NotFound("action"))
    }

    /// Completed action steps, newest first, each with why it cannot be undone, if it cannot.
    fn undoable(
        &self,
        action: &Action,
        snapshots: &BTreeMap<usize, StoredSnapshot>,
        policy: &crate::policy::Policy,
    ) -> Vec<Undo> {
        let now = self.clock.now();
        action
            .steps
            .iter()
            .rev()
            .filter(|s| s.state == StepState::Completed)
            .filter_map(|s| match &s.kind {
                StepKind::Action { action_type, payload } => {
                    let handler = self.registry.resolve(action_type, policy);
                    let reversible =
                        handler.as_ref().is_some_and(|h| h.reversibility(payload) == Reversibility::Reversible);
                    // Undone only at the target the change went to.
                    let same_target = s.pin.is_none() || handler.as_ref().and_then(|h| h.pin()) == s.pin;
                    // TTL deletion is lazy: an item past its expiry counts as gone.
                    let kept = s.snapshot_at.is_none() || snapshots.get(&s.index).is_some_and(|k| k.expires_at > now);
                    let blocker = match (reversible, kept, same_target) {
                        (false, _, _) => Some(IRREVERSIBLE),
                        (true, _, false) => Some(TARGET_CHANGED),
                        (true, false, true) => Some(EXPIRED),
                        (true, true, true) => None,
                    };
                    Some(Undo { index: s.index, action_type: action_type.clone(), payload: payload.clone(), blocker })
                }
                _ => None,
            })
            .collect()
    }

    /// Continues a rollback whose worker stopped (found by the sweep through its lease).
    pub async fn resume(&self, action: Action, stop_by: Option<DateTime<Utc>>) -> Result<Action, ApiError> {
        let request = RollbackRequest { reason: None, partial: true };
        self.roll_back_by(action, &request, "rollback", stop_by).await
    }

    pub async fn roll_back(&self, action: Action, request: &RollbackRequest, actor: &str) -> Result<Action, ApiError> {
        self.roll_back_by(action, request, actor, None).await
    }

    /// [`RollbackService::roll_back`] within an invocation that ends at `stop_by`: no undo is
    /// started that could not finish before it; the rest is left `rolling_back` with its lease
    /// run out, for the sweep to resume.
    pub async fn roll_back_by(
        &self,
        action: Action,
        request: &RollbackRequest,
        actor: &str,
        stop_by: Option<DateTime<Utc>>,
    ) -> Result<Action, ApiError> {
        tracing::info!(action_id = %action.action_id, actor, partial = request.partial, "rollback requested");
        let now = self.clock.now();
        match action.status {
            // Twice is harmless.
            Status::RolledBack => return Ok(action),
            // Another worker is undoing it now: never two at once.
            Status::RollingBack if action.lease_expires_at.is_some_and(|t| t > now) => {
                return Err(ApiError::InvalidState {
                    status: Status::RollingBack,
                    message: "a rollback of it is in progress".into(),
                })
            }
            Status::Completed | Status::Failed | Status::RollingBack => {}
            // A plan stopped half-way undoes the steps it ran.
            Status::Cancelled | Status::Rejected | Status::Expired if action.ran_a_step() => {}
            other => {
                return Err(ApiError::InvalidState {
                    status: other,
                    message: "only completed or failed actions (or a plan stopped after some of its steps ran) can be rolled back".into(),
                })
            }
        }
        let snapshots = if action.steps.iter().any(|s| s.snapshot_at.is_some()) {
            self.store.snapshots(action.action_id).await.map_err(ApiError::internal)?
        } else {
            BTreeMap::new()
        };
        let policy = self.deps.policy.current().await;
        let steps = self.undoable(&action, &snapshots, &policy);
        let irreversible: Vec<Value> = steps
            .iter()
            .filter_map(|u| Some(json!({"step": u.index, "action_type": u.action_type, "why": u.blocker?})))
            .collect();
        if !irreversible.is_empty() && !request.partial {
            let (code, message) = if steps.iter().any(|u| matches!(u.blocker, Some(IRREVERSIBLE | TARGET_CHANGED))) {
                ("not_reversible", "some executed steps cannot be undone; ask for a partial rollback to undo the rest")
            } else {
                (
                    "rollback_expired",
                    "the rollback data of some steps is past its retention; ask for a partial rollback to undo the rest",
                )
            };
            return Err(ApiError::Conflict {
                code,
                message: message.into(),
                extra: json!({"status": action.status, "irreversible_steps": irreversible}),
            });
        }
        let mut leased = action.clone();
        leased.lease_expires_at = Some(now + chrono::Duration::seconds(LEASE_SECS));
        leased.compensation_due = false;
        if action.status != Status::RollingBack {
            // Progress is measured from the start, then from each step undone.
            leased.rollback_progress_at = Some(now);
        }
        let mut current = if action.status == Status::RollingBack {
            // A rollback whose worker stopped: take it over (its lease ran out).
            leased.version = action.version + 1;
            leased.updated_at = now;
            self.store.transition_many(&action, &leased, &[], None).await.map_err(conflict_or_internal)?;
            leased
        } else {
            let reason = request.reason.clone().unwrap_or_else(|| "rollback requested".into());
            self.store
                .advance(
                    &action,
                    leased,
                    &[(Status::RollingBack, reason, Some(json!({"by": actor, "partial": request.partial})))],
                    actor,
                    now,
                )
                .await
                .map_err(conflict_or_internal)?
        };
        let mut order = Vec::new();
        for Undo { index, action_type, payload, .. } in steps.into_iter().filter(|u| u.blocker.is_none()) {
            let undo_ends = self.clock.now()
                + chrono::Duration::from_std(UNDO_BOUND).unwrap_or_default()
                + chrono::Duration::seconds(5);
            if stop_by.is_some_and(|t| undo_ends > t) {
                // Hand the rest over: the lease ends now, so the next sweep resumes it.
                let mut handed = current.clone();
                handed.lease_expires_at = Some(self.clock.now());
                handed.version = current.version + 1;
                handed.updated_at = self.clock.now();
                self.store.transition_many(&current, &handed, &[], None).await.map_err(conflict_or_internal)?;
                tracing::info!(action_id = %current.action_id, step = index, "rollback handed over: too little of the invocation left");
                return Ok(handed);
            }
            let handler = self
                .registry
                .resolve(&action_type, &policy)
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no handler for {action_type}")))?;
            // Claim this step's undo with a conditional write (and a fresh lease) first: a
            // concurrent rollback loses here instead of undoing it a second time.
            if index >= current.steps.len() || current.steps[index].index != index {
                return Err(ApiError::internal(anyhow::anyhow!("step {index} is not where its index says")));
            }
            let resumed = current.steps[index].undo_started_at.is_some();
            let tries = current.steps[index].undo_attempts;
            let exhausted = tries >= current.max_attempts.max(1);
            if resumed && (!handler.idempotent() || exhausted) {
                let mut after = current.clone();
                after.lease_expires_at = None;
                let message = if handler.idempotent() {
                    format!("the rollback of step {index} ({action_type}) was interrupted {tries} times; no attempts left: a human must check")
                } else {
                    format!("the rollback of step {index} ({action_type}) was interrupted; whether it was undone is unknown and it cannot be repeated safely: a human must check")
                };
                after.error = Some(
                    json!({"rollback_step": index, "code": "outcome_unknown", "message": message, "needs_human": true}),
                );
                return self
                    .store
                    .advance(
                        &current,
                        after,
                        &[(Status::RollbackFailed, message, Some(json!({"step": index, "needs_human": true})))],
                        actor,
                        self.clock.now(),
                    )
                    .await
                    .map_err(conflict_or_internal);
            }
            let mut claim = current.clone();
            let started = self.clock.now();
            claim.steps[index].undo_started_at = Some(started);
            claim.steps[index].undo_attempts = tries.saturating_add(1);
            claim.lease_expires_at = Some(started + chrono::Duration::seconds(LEASE_SECS));
            claim.version = current.version + 1;
            claim.updated_at = started;
            self.store.transition_many(&current, &claim, &[], None).await.map_err(conflict_or_internal)?;
            current = claim;
            let step = &current.steps[index];
            let snapshot = snapshots.get(&index).map_or(Value::Null, |k| k.snapshot.clone());
            let result = step.result.clone().unwrap_or(Value::Null);
            let ctx = StepContext::new(current.action_id, &current.user_id, index, &payload, &self.deps);
            let outcome = match tokio::time::timeout(UNDO_BOUND, handler.rollback(&ctx, &snapshot, &result)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(crate::ports::handler::HandlerError::transient(
                    "timeout",
                    format!("the undo did not finish within {}s", UNDO_BOUND.as_secs()),
                )),
            };
            let mut after = current.clone();
            let now = self.clock.now();
            match outcome {
                Ok(undone) => {
                    after.rollback_progress_at = Some(now);
                    after.steps[index].state = StepState::RolledBack;
                    after.steps[index].error = None;
                    let undone = crate::domain::execution::bounded_undo(undone);
                    after.steps[index].result = Some(json!({"executed": result, "rolled_back": undone}));
                    after.version = current.version + 1;
                    after.updated_at = now;
                    // Progress, not a transition: saved so a stopped rollback continues here.
                    self.store.transition_many(&current, &after, &[], None).await.map_err(conflict_or_internal)?;
                    tracing::info!(action_id = %current.action_id, step = index, "step rolled back");
                    current = after;
                    order.push(index);
                }
                Err(e) => {
                    after.lease_expires_at = None;
                    after.steps[index].error = Some(json!(e));
                    after.error =
                        Some(json!({"rollback_step": index, "code": e.code, "message": e.message, "kind": e.kind}));
                    let why = format!("rolling back step {index} ({action_type}) failed: {e}");
                    return self
                        .store
                        .advance(
                            &current,
                            after,
                            &[(Status::RollbackFailed, why, Some(json!({"step": index, "error": e})))],
                            actor,
                            now,
                        )
                        .await
                        .map_err(conflict_or_internal);
                }
            }
        }
        // A step whose outcome is unknown (it may have taken effect) was not undone either: say
        // so, and keep the call for a human.
        let unknown = unknown_outcome_step(&current);
        let mut not_undone = irreversible.clone();
        if let Some(index) = unknown {
            let action_type = current.steps.get(index).and_then(|s| s.kind.action_type()).unwrap_or("?");
            not_undone.push(json!({"step": index, "action_type": action_type, "why": "outcome_unknown"}));
        }
        let mut detail = json!({"rolled_back_in_order": order, "not_undone": not_undone});
        let reason = match (irreversible.is_empty(), unknown) {
            (_, Some(index)) => {
                detail["needs_human"] = json!(true);
                format!("partial rollback: whether step {index} took effect is unknown; a human must check it")
            }
            (true, None) => "every executed step was undone".to_owned(),
            (false, None) => "partial rollback: irreversible steps were left as they are".to_owned(),
        };
        let mut finished = current.clone();
        finished.lease_expires_at = None;
        self.store
            .advance(&current, finished, &[(Status::RolledBack, reason, Some(detail))], actor, self.clock.now())
            .await
            .map_err(conflict_or_internal)
    }
}

fn conflict_or_internal(e: TransitionError) -> ApiError {
    match e {
        TransitionError::Conflict => {
            ApiError::InvalidState { status: Status::RollingBack, message: "it changed while being rolled back".into() }
        }
        TransitionError::Store(e) => ApiError::internal(e),
    }
}

/// The action, plus which steps were undone and which could not be.
fn with_outcome(action: &Action) -> Value {
    let mut body = action.to_api();
    let steps = |state: StepState| -> Vec<usize> {
        action.steps.iter().filter(|s| s.state == state).map(|s| s.index).collect()
    };
    body["rolled_back_steps"] = json!(steps(StepState::RolledBack));
    let mut not_undone = steps(StepState::Completed);
    not_undone.extend(unknown_outcome_step(action));
    body["not_undone_steps"] = json!(not_undone);
    body
}

/// The step whose outcome is unknown (`outcome_unknown`: it may have taken effect), if any.
fn unknown_outcome_step(action: &Action) -> Option<usize> {
    let error = action.error.as_ref()?;
    (error.get("code").and_then(Value::as_str) == Some("outcome_unknown"))
        .then(|| error.get("step").and_then(Value::as_u64).map(|i| i as usize))
        .flatten()
}
