//! Delivery of status notifications (`crate::domain::notify`) to the address a requester named.

use crate::domain::UserId;
use crate::ports::handler::HandlerError;
use async_trait::async_trait;

#[async_trait]
pub trait Deliverer: Send + Sync {
    /// Posts `body` (JSON) to `url`, signed with `user`'s receiver key, with `event_id` as its
    /// idempotency key. `Ok` on a 2xx; a transient error for 408, 429, 5xx, timeouts and
    /// connection errors (with the receiver's `Retry-After`); a permanent one for any other
    /// answer, or an address refused.
    async fn deliver(&self, user: &UserId, url: &str, event_id: &str, body: &[u8]) -> Result<(), HandlerError>;

    /// The key `user`'s receivers check signatures with
    /// ([`crate::domain::notify::receiver_key`]).
    async fn receiver_key(&self, user: &UserId) -> Result<String, HandlerError>;
}

/// After a committed write that recorded `n`: asks an executor to deliver it now, waiting at
/// most 2 s (the write is done; a slow queue must not hold up the caller). A message that is
/// lost here is found by the sweep.
pub async fn queue_delivery(queue: &dyn crate::ports::queue::WorkQueue, n: &crate::domain::notify::Notification) {
    let message = crate::ports::queue::ExecuteMessage::notification(n.action_id, n.version);
    match tokio::time::timeout(std::time::Duration::from_secs(2), queue.enqueue(&message, 0)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, action_id = %n.action_id, "queueing a notification failed; the sweep will")
        }
        Err(_) => tracing::warn!(action_id = %n.action_id, "queueing a notification timed out; the sweep will"),
    }
}
