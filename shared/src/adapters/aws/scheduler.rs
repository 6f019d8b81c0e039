//! One-time EventBridge Scheduler schedules that put a work message on the queue at a given
//! time: wait steps, and retries delayed past SQS's 15-minute limit. Each deletes itself after
//! firing; its name is derived from what it resumes, so creating it twice is harmless.

use crate::ports::queue::ExecuteMessage;
use crate::ports::scheduler::{SchedulerError, WakeUps};
use async_trait::async_trait;
use aws_sdk_scheduler::error::DisplayErrorContext;
use aws_sdk_scheduler::operation::create_schedule::CreateScheduleError;
use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
use chrono::{DateTime, Utc};

#[derive(Clone)]
pub struct WakeUpScheduler {
    client: crate::adapters::aws::lazy::OnFirstUse<aws_sdk_scheduler::Client>,
    group: String,
    role_arn: String,
    queue_arn: String,
}

impl WakeUpScheduler {
    pub fn new(
        client: impl Into<crate::adapters::aws::lazy::OnFirstUse<aws_sdk_scheduler::Client>>,
        group: impl Into<String>,
        role_arn: impl Into<String>,
        queue_arn: impl Into<String>,
    ) -> Self {
        Self { client: client.into(), group: group.into(), role_arn: role_arn.into(), queue_arn: queue_arn.into() }
    }
}

#[async_trait]
impl WakeUps for WakeUpScheduler {
    /// Delivers `message` to the work queue at `at` (second precision, UTC).
    async fn schedule(&self, name: &str, at: DateTime<Utc>, message: &ExecuteMessage) -> Result<(), SchedulerError> {
        let input = serde_json::to_string(message).map_err(|e| SchedulerError(e.to_string()))?;
        let target = Target::builder()
            .arn(&self.queue_arn)
            .role_arn(&self.role_arn)
            .input(input)
            .build()
            .map_err(|e| SchedulerError(e.to_string()))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| SchedulerError(e.to_string()))?;
        let result = self
            .client
            .create_schedule()
            .name(name)
            .group_name(&self.group)
            .schedule_expression(format!("at({})", at.format("%Y-%m-%dT%H:%M:%S")))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .target(target)
            .action_after_completion(ActionAfterCompletion::Delete)
            .client_token(name)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Same name: an earlier attempt already scheduled this wake-up.
            Err(e) if matches!(e.as_service_error(), Some(CreateScheduleError::ConflictException(_))) => Ok(()),
            Err(e) => Err(SchedulerError(DisplayErrorContext(e).to_string())),
        }
    }
}

/// Parses the `at(...)` expressions this module writes (used by the local stack's pump).
pub fn parse_at(expression: &str) -> Option<DateTime<Utc>> {
    let inner = expression.strip_prefix("at(")?.strip_suffix(')')?;
    chrono::NaiveDateTime::parse_from_str(inner, "%Y-%m-%dT%H:%M:%S").ok().map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_expressions_round_trip() {
        let t = DateTime::parse_from_rfc3339("2026-03-01T12:34:56Z").unwrap().with_timezone(&Utc);
        let expr = format!("at({})", t.format("%Y-%m-%dT%H:%M:%S"));
        assert_eq!(parse_at(&expr), Some(t));
        assert_eq!(parse_at("rate(5 minutes)"), None);
    }

    #[test]
    fn names_fit_the_scheduler_limit() {
        let m = ExecuteMessage::step(crate::domain::ActionId::new_v7(Utc::now()), 19);
        let name = crate::ports::scheduler::wake_up_name(&m, "s19-retry12");
        assert!(
            name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        );
    }
}
