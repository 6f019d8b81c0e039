//! Asking connectors at intake, before anything is stored: `validate` (a refusal is a 400
//! naming the step's payload) and `preview` (the sentence dry runs, approval mail and pages
//! show), all within one budget per request.

use super::*;
use crate::domain::connectors::Phase;
use crate::domain::StepKind;
use crate::ports::handler::{Consultation, ErrorKind, HandlerError};
use std::time::{Duration, Instant};

/// The most of one request's time spent asking connectors (API Gateway gives up at 30 s).
const CONSULT_BUDGET: Duration = Duration::from_secs(10);
/// The longest preview sentence kept.
const MAX_PREVIEW_CHARS: usize = 300;

/// Format characters that change how text reads without showing: bidirectional overrides and
/// isolates, zero-width characters, the soft hyphen, the byte-order mark.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// A connector's sentence, fit for a mail and a page: one line, no control characters, bounded.
fn clean_preview(raw: &str) -> Option<String> {
    let line: String = raw
        .chars()
        .filter(|c| !is_invisible(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut kept: String = line.chars().take(MAX_PREVIEW_CHARS).collect();
    if line.chars().count() > MAX_PREVIEW_CHARS {
        kept.push('…');
    }
    (!kept.is_empty()).then_some(kept)
}

/// What a failed question means for the request: the connector refused the payload (400), or
/// it could not answer (503, the agent may try again).
fn consult_error(e: HandlerError, action_type: &str, field: &str, phase: Phase) -> ApiError {
    // The connector refusing our signature, or the method, says nothing about the payload:
    // that is our side's problem (a rotated key, a wrong endpoint), not the agent's. (A 403 or
    // 404 is the connector's answer about the payload: "not this user", "no such page".)
    let misconfigured = ["connector_401", "connector_405"].contains(&e.code.as_str());
    let refused = e.kind == ErrorKind::Permanent && e.code.starts_with("connector_4") && !misconfigured;
    if refused {
        return ApiError::Refused {
            code: "connector_refused",
            message: format!("{field}: the {action_type} connector refused it: {}", e.message),
            extra: json!({"field": field, "action_type": action_type, "connector_error": e.code}),
        };
    }
    ApiError::Unavailable {
        code: "connector_unavailable",
        message: format!("the {action_type} connector could not {} the payload: {e}", phase.as_str()),
        retry_after_secs: Some(
            e.retry_after_secs.map_or(if misconfigured { 60 } else { 5 }, |s| s.clamp(1, 3600) as i64),
        ),
    }
}

impl IntakeService {
    /// When integration `name`'s open breaker lets a call through again (`None`: closed, or
    /// unreadable — then the connector is asked).
    async fn open_until(&self, name: &str, policy: &Policy) -> Option<DateTime<Utc>> {
        let settings = crate::domain::integrations::settings_for(&policy.integrations, name);
        let breaker = self.store.integration(name, settings.window).await.ok()?;
        match breaker.gate(&settings, self.clock.now()) {
            crate::domain::integrations::Gate::Wait { until } => Some(until),
            _ => None,
        }
    }

    /// Asks each step's connector what it serves of `validate` and `preview`; the previews, a
    /// step each (`None` where there is none). A refusal by `validate` refuses the request.
    pub(super) async fn consult(
        &self,
        request: &CreateActionRequest,
        policy: &Policy,
        user: &UserId,
    ) -> Result<Vec<Option<String>>, ApiError> {
        let started = Instant::now();
        let single = request.steps.len() == 1 && !request.payload.is_null();
        let mut previews = Vec::with_capacity(request.steps.len());
        for (index, kind) in request.steps.iter().enumerate() {
            let mut preview = None;
            if let StepKind::Action { action_type, payload } = kind {
                if let Some(handler) = self.registry.resolve(action_type, policy) {
                    let field = if single { "payload".to_owned() } else { format!("steps[{index}].payload") };
                    // A connector whose breaker is open is not asked: it is known to be down.
                    let open = match handler.integration(payload) {
                        Some(name) => self.open_until(&name, policy).await,
                        None => None,
                    };
                    for phase in [Phase::Validate, Phase::Preview] {
                        let budget = CONSULT_BUDGET.saturating_sub(started.elapsed());
                        let question = Consultation { phase, user, step: index, payload, budget };
                        let Some(answer) = handler.consult(&question) else { continue };
                        let answer = match open {
                            Some(until) => Err(HandlerError::transient(
                                "integration_open",
                                format!("its circuit is open until {}", format_time(until)),
                            )
                            .retry_after(u64::try_from((until - self.clock.now()).num_seconds()).ok())),
                            // Bounded as a whole (the key's fetch included), whatever the connector does.
                            None => tokio::time::timeout(budget + Duration::from_secs(1), answer).await.unwrap_or_else(
                                |_| Err(HandlerError::transient("timeout", "the connector did not answer in time")),
                            ),
                        };
                        match (phase, answer) {
                            (Phase::Preview, Ok(a)) => {
                                preview = a.get("preview").and_then(Value::as_str).and_then(clean_preview);
                            }
                            (_, Ok(_)) => {}
                            // A preview is a courtesy: without one the type's description is shown.
                            (Phase::Preview, Err(e))
                                if e.kind != ErrorKind::Permanent || !e.code.starts_with("connector_4") =>
                            {
                                tracing::warn!(error = %e, action_type = %action_type, "the connector gave no preview");
                            }
                            (_, Err(e)) => return Err(consult_error(e, action_type, &field, phase)),
                        }
                    }
                }
            }
            previews.push(preview);
        }
        Ok(previews)
    }
}

/// The most of one request's time spent reading what changes' targets look like.
const LOOK_BUDGET: Duration = Duration::from_secs(3);
/// The largest reading kept on a step.
const MAX_LOOK_BYTES: usize = 8 * 1024;

impl IntakeService {
    /// For work that waits for approval: reads what each Gmail label change's message looks
    /// like now (its labels, through the handler's read-only snapshot), so the approval mail and
    /// page show the labels before → after. Within [`LOOK_BUDGET`] for the whole request; a
    /// reading that fails or is late is left out (the change is shown without it).
    pub(super) async fn look_before(&self, action: &mut Action) {
        let Some(deps) = &self.lookups else { return };
        let started = Instant::now();
        let user = action.user_id.clone();
        let id = action.action_id;
        for step in action.steps.iter_mut() {
            let StepKind::Action { action_type, payload } = &step.kind else { continue };
            if crate::domain::google_payloads::label_change(action_type).is_none() {
                continue;
            }
            let Some(handler) = self.registry.get(action_type) else { continue };
            let left = LOOK_BUDGET.saturating_sub(started.elapsed());
            if left.is_zero() {
                tracing::warn!("no time left to read the targets of the remaining steps");
                break;
            }
            let ctx = crate::ports::handler::StepContext::new(id, &user, step.index, payload, deps);
            match tokio::time::timeout(left, handler.snapshot(&ctx)).await {
                Ok(Ok(seen)) if serde_json::to_vec(&seen).map(|b| b.len()).unwrap_or(usize::MAX) <= MAX_LOOK_BYTES => {
                    step.before = Some(seen);
                }
                Ok(Ok(_)) => tracing::warn!(step = step.index, "the target's reading is too large to keep"),
                Ok(Err(e)) => {
                    tracing::warn!(step = step.index, error = %e, "reading the target failed; shown without it")
                }
                Err(_) => tracing::warn!(step = step.index, "reading the target timed out; shown without it"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_one_bounded_line() {
        assert_eq!(clean_preview("Add a link\r\nto /page\t now").as_deref(), Some("Add a link to /page now"));
        assert_eq!(clean_preview("  \n "), None);
        assert_eq!(clean_preview("pay \u{202E}0001\u{202C} USD").as_deref(), Some("pay 0001 USD"), "no bidi tricks");
        let long = clean_preview(&"é".repeat(400)).unwrap();
        assert_eq!(long.chars().count(), MAX_PREVIEW_CHARS + 1);
    }

    #[test]
    fn a_connector_4xx_is_the_caller_s_and_anything_else_is_unavailable() {
        let refused = consult_error(
            HandlerError::permanent("connector_422", "page_missing: /nope does not exist"),
            "ADD_AFFILIATE_LINK",
            "payload",
            Phase::Validate,
        );
        assert_eq!((refused.status_code(), refused.code()), (400, "connector_refused"));
        assert_eq!(refused.body()["field"], "payload");
        assert!(refused.to_string().contains("/nope does not exist"));
        let down = consult_error(HandlerError::transient("timeout", "slow"), "X", "payload", Phase::Validate);
        assert_eq!((down.status_code(), down.code(), down.retry_after()), (503, "connector_unavailable", Some(5)));
        let misconfigured =
            consult_error(HandlerError::permanent("secret_missing", "no key"), "X", "payload", Phase::Validate);
        assert_eq!(misconfigured.status_code(), 503);
        for ours in ["connector_401", "connector_405"] {
            let e = consult_error(HandlerError::permanent(ours, "bad signature"), "X", "payload", Phase::Validate);
            assert_eq!(
                (e.status_code(), e.code()),
                (503, "connector_unavailable"),
                "{ours} is not the payload's fault"
            );
        }
        let theirs =
            consult_error(HandlerError::permanent("connector_404", "no such page"), "X", "payload", Phase::Validate);
        assert_eq!(theirs.code(), "connector_refused");
    }
}
