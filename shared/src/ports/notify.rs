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
