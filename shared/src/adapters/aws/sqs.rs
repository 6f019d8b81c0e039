//! The work queue (SQS): messages that ask an executor to run one step of one action.

use crate::ports::queue::{ExecuteMessage, QueueError, WorkQueue};
use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::Client;

#[derive(Clone)]
pub struct SqsQueue {
    client: crate::adapters::aws::lazy::OnFirstUse<Client>,
    url: String,
}

impl SqsQueue {
    pub fn new(client: impl Into<crate::adapters::aws::lazy::OnFirstUse<Client>>, url: impl Into<String>) -> Self {
        Self { client: client.into(), url: url.into() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    /// Sends a message, optionally delayed (SQS caps delays at 15 minutes).
    #[tracing::instrument(skip(self), fields(action_id = %message.action_id))]
    async fn enqueue(&self, message: &ExecuteMessage, delay_secs: u32) -> Result<String, QueueError> {
        let body = serde_json::to_string(message).map_err(|e| QueueError(e.to_string()))?;
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_secs.min(900) as i32)
            .send()
            .await
            .map_err(|e| QueueError(DisplayErrorContext(e).to_string()))?;
        Ok(out.message_id.unwrap_or_default())
    }
}
