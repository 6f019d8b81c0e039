//! The circuit breakers' bookkeeping over the store: the breaker on automatic execution, and
//! one per integration (`crate::domain::integrations`).

use crate::domain::breaker::BreakerSettings;
use crate::domain::integrations::{Failure, Gate, IntegrationSettings};
use crate::ports::store::{GuardStore, IntegrationStore, TransitionError};
use chrono::{DateTime, Utc};

/// Records one failure of automatic work on the circuit breaker (read, decide, conditional
/// save; retried on a concurrent change). Returns the reason when this failure opened it
/// (audited as a change by `actor`, and published as the `CircuitBreakerOpen` metric).
pub async fn record_failure(
    store: &dyn GuardStore,
    settings: &BreakerSettings,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, TransitionError> {
    for _ in 0..5 {
        let mut breaker = store.breaker(settings.window).await?;
        let before = breaker.version;
        let opened = breaker.record(false, settings, now);
        breaker.version += 1;
        let change = opened.as_deref().map(|r| ("closed", "open", actor, r));
        match store.save_breaker(before, &breaker, change, now).await {
            Ok(()) => {
                if let Some(reason) = &opened {
                    tracing::error!(%reason, "circuit breaker opened: automatic execution paused");
                    crate::telemetry::breaker_open_metric(now);
                }
                return Ok(opened);
            }
            Err(TransitionError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(TransitionError::Conflict)
}

/// Whether a step for an integration may run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Run it; `probe` when this call is the one let through a cooled-off breaker.
    Run { probe: bool },
    /// The integration's breaker is open: look again at `until`.
    Wait { until: DateTime<Utc>, reason: String },
}

/// What a call told about its integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It succeeded.
    Answered,
    /// A transient failure or an unknown outcome: the integration may be unwell.
    Failed,
    /// The request's own fault (a 4xx): the integration answered, so it is up.
    Refused,
    /// Says nothing about the integration (our store or secrets, a per-user 429).
    Unrelated,
}

impl CallOutcome {
    /// A step's result: success, a transient failure or unknown outcome, or a refusal.
    pub fn of(error: Option<&crate::ports::handler::HandlerError>) -> Self {
        match error {
            None => Self::Answered,
            Some(e) if crate::domain::integrations::NOT_THE_INTEGRATION.contains(&e.code.as_str()) => Self::Unrelated,
            // Only a refusal the target itself sent shows it answers; ours (no credentials, a
            // refused address, a bad payload) happen before any call.
            Some(e) if e.kind == crate::ports::handler::ErrorKind::Permanent => {
                if e.code.starts_with("http_4") || e.code.starts_with("connector_4") {
                    Self::Refused
                } else {
                    Self::Unrelated
                }
            }
            Some(_) => Self::Failed,
        }
    }
}

/// Reads integration `name`'s breaker and decides; a cooled-off breaker lets exactly one caller
/// through as the probe (a conditional write, audited). A store error lets the call run (the
/// breaker protects the target, it must not stop work because its own item is unreadable).
pub async fn admit(
    store: &dyn IntegrationStore,
    name: &str,
    settings: &IntegrationSettings,
    actor: &str,
    now: DateTime<Utc>,
) -> Admission {
    let breaker = match store.integration(name, settings.window).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, integration = name, "the integration's breaker could not be read; running");
            return Admission::Run { probe: false };
        }
    };
    let reason = |until: DateTime<Utc>| {
        format!(
            "integration_open: the circuit of {name} is open ({}); next try at {}",
            breaker.breaker.reason.as_deref().unwrap_or("too many failures"),
            crate::domain::time::format_time(until)
        )
    };
    match breaker.gate(settings, now) {
        Gate::Pass => Admission::Run { probe: false },
        Gate::Wait { until } => Admission::Wait { until, reason: reason(until) },
        Gate::Probe => {
            let before = breaker.version();
            let mut probing = breaker.clone();
            probing.start_probe(now);
            let change = ("open", "half_open", actor, "the cool-off is over: one probe call is let through");
            match store.save_integration(name, before, &probing, Some(change), now).await {
                Ok(()) => {
                    tracing::info!(integration = name, "half-open: this call is the probe");
                    Admission::Run { probe: true }
                }
                // Another executor took the probe (or the store failed): wait for its answer.
                Err(e) => {
                    if let TransitionError::Store(e) = &e {
                        tracing::warn!(error = %e, integration = name, "claiming the probe failed");
                    }
                    let until = now + chrono::Duration::seconds(30);
                    Admission::Wait { until, reason: reason(until) }
                }
            }
        }
    }
}

/// What one call was, for its integration's breaker.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub outcome: CallOutcome,
    /// It was the probe let through a cooled-off breaker.
    pub probe: bool,
    /// (action, user) that made it.
    pub source: (&'a str, &'a str),
}

/// Records what a call to integration `name` told about it. Returns the reason when this
/// opened the breaker from closed (alert once). A success on a closed breaker is one write
/// without a read; anything else reads, decides and saves conditionally (retried on a race).
pub async fn record_call(
    store: &dyn IntegrationStore,
    name: &str,
    settings: &IntegrationSettings,
    call: Call<'_>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, TransitionError> {
    // A refusal is the request's fault, but a refused probe shows the integration answers.
    let answered = match call.outcome {
        CallOutcome::Answered => true,
        CallOutcome::Refused if call.probe => true,
        CallOutcome::Refused | CallOutcome::Unrelated => return Ok(None),
        CallOutcome::Failed => false,
    };
    for _ in 0..5 {
        let mut breaker = store.integration(name, settings.window).await?;
        let before = breaker.version();
        let change = if answered {
            if !breaker.is_open() {
                store.integration_success(name).await?;
                return Ok(None);
            }
            let from = if breaker.probe_started_at.is_some() { "half_open" } else { "open" };
            breaker.close(now);
            Some((from, "closed", "a call succeeded; the integration is back".to_owned()))
        } else {
            match breaker.record_failure(name, settings, call.source, now) {
                Failure::Counted => None,
                Failure::Opened(reason) => Some(("closed", "open", reason)),
                Failure::ProbeFailed(reason) => Some(("half_open", "open", reason)),
            }
        };
        let audited = change.as_ref().map(|(from, to, reason)| (*from, *to, actor, reason.as_str()));
        match store.save_integration(name, before, &breaker, audited, now).await {
            Ok(()) => {
                return Ok(match change {
                    Some(("closed", _, reason)) => {
                        tracing::error!(integration = name, %reason, "integration circuit opened: its work waits");
                        crate::telemetry::integration_open_metric(name, now);
                        Some(reason)
                    }
                    Some((from, to, reason)) => {
                        tracing::warn!(integration = name, from, to, %reason, "integration circuit changed");
                        None
                    }
                    None => None,
                });
            }
            Err(TransitionError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(TransitionError::Conflict)
}
