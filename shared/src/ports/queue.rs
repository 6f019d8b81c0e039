//! The work queue: messages that ask an executor to run one step of one action.

use crate::domain::ActionId;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The body of a work-queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteMessage {
    pub action_id: ActionId,
    /// Index of the step to run.
    pub step: usize,
    /// Instead of a step: deliver the action's notification of this version
    /// (`crate::domain::notify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<u64>,
}

impl ExecuteMessage {
    /// Run step `step` of the action.
    pub fn step(action_id: ActionId, step: usize) -> Self {
        Self { action_id, step, notify: None }
    }

    /// Deliver the action's notification of `version`.
    pub fn notification(action_id: ActionId, version: u64) -> Self {
        Self { action_id, step: 0, notify: Some(version) }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("SQS request failed: {0}")]
pub struct QueueError(pub String);

/// At-least-once delivery: a message may arrive twice or late, so executors check the action's
/// state before acting on one.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Sends a message, optionally delayed (at most 15 minutes: longer waits go through the
    /// scheduler); returns the message id.
    async fn enqueue(&self, message: &ExecuteMessage, delay_secs: u32) -> Result<String, QueueError>;
}
