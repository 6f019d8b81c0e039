//! The circuit breaker's bookkeeping over the guard store.

use crate::domain::breaker::BreakerSettings;
use crate::ports::store::{GuardStore, TransitionError};
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
