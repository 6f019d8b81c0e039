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
