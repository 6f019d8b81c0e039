//! What follows work that failed for good: the circuit breaker is fed, the admin alerted when
//! it opens, completed steps compensated when the policy says so, and stopped rollbacks resumed.

use super::*;

impl ExecutorService {
    /// A rollback whose worker stopped (the sweep found its lease run out): continue it here.
    pub(super) async fn resume_rollback(&self, action: Action, deadline: DateTime<Utc>) -> Outcome {
        if action.lease_expires_at.is_some_and(|t| t > self.clock.now()) {
            return Outcome::Ignored("a rollback of it is in progress".into());
        }
        match self.compensator.resume(action, Some(deadline)).await {
            Ok(done) => Outcome::Ran(done.status),
            Err(crate::ports::api::ApiError::InvalidState { .. }) => {
                Outcome::Ignored("taken over by another worker".into())
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// Automatic compensation: when the policy says so, a plan that failed for good has its
    /// completed steps rolled back (what cannot be undone is reported in the rollback's result).
    pub(super) async fn compensate(&self, failed: Action, deadline: DateTime<Utc>) -> Outcome {
        if !failed.ran_a_step() || !self.deps.policy.current().await.defaults.compensate_on_failure {
            if failed.compensation_due {
                // The policy no longer compensates: nothing is owed any more.
                let mut settled = failed.clone();
                settled.compensation_due = false;
                settled.version = failed.version + 1;
                settled.updated_at = self.clock.now();
                if let Err(e) = self.store.transition_many(&failed, &settled, &[], None).await {
                    return Outcome::Retry(e.to_string());
                }
            }
            return Outcome::Ran(Status::Failed);
        }
        let step = failed.error.as_ref().and_then(|e| e.get("step")).cloned().unwrap_or(Value::Null);
        let request = RollbackRequest {
            reason: Some(format!("automatic compensation: step {step} failed for good")),
            partial: true,
        };
        match self.compensator.roll_back_by(failed, &request, "executor", Some(deadline)).await {
            Ok(done) => {
                tracing::info!(status = %done.status, "failed plan compensated");
                Outcome::Ran(done.status)
            }
            // Taken over (another worker, or the owner's rollback) or already settled.
            Err(crate::ports::api::ApiError::InvalidState { status, .. }) => Outcome::Ran(status),
            Err(e) => {
                // Still owed (`compensation_due`): the message comes back, and the sweep re-sends.
                tracing::error!(error = %e, "automatic compensation did not start");
                Outcome::Retry(e.to_string())
            }
        }
    }

    /// Feeds the circuit breaker with a failure of automatic (tier-1) work (successes are counted
    /// with the step's own write); the executor that opens it tells the admin, once.
    pub(super) async fn record_automatic_failure(&self, _action: &Action) {
        let policy = self.deps.policy.current().await;
        let now = self.clock.now();
        match crate::services::breaker::record_failure(&*self.store, &policy.auto_execution.breaker, "executor", now)
            .await
        {
            Ok(Some(reason)) => {
                let mail = crate::services::notices::alert_recipient(&policy)
                    .map(|to| crate::services::notices::alert_mail(to, &reason, now));
                if let (Some(mailer), Some(mail)) = (self.deps.mailer.as_ref(), mail) {
                    if let Err(e) = mailer.send_within(&mail, std::time::Duration::from_secs(10)).await {
                        tracing::error!(error = %e, "the breaker alert could not be sent");
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "recording a failure on the circuit breaker failed"),
        }
    }
}
