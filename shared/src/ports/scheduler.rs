//! One-time wake-ups that put a work message on the queue at a given time: wait steps, and
//! retries delayed past the queue's 15-minute limit.

use crate::ports::queue::ExecuteMessage;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
#[error("scheduler request failed: {0}")]
pub struct SchedulerError(pub String);

/// `ag-<action id>-<purpose>`: at most 64 characters of `[0-9a-zA-Z-_.]`, derived from what it
/// resumes, so creating the same wake-up twice is harmless.
pub fn wake_up_name(message: &ExecuteMessage, purpose: &str) -> String {
    format!("ag-{}-{purpose}", message.action_id)
}

#[async_trait]
pub trait WakeUps: Send + Sync {
    /// Delivers `message` to the work queue at `at` (second precision, UTC). A second call with
    /// the same `name` is accepted and changes nothing.
    async fn schedule(&self, name: &str, at: DateTime<Utc>, message: &ExecuteMessage) -> Result<(), SchedulerError>;
}
