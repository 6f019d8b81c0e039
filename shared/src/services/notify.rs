//! Delivery of status notifications (`crate::domain::notify`): an executor claims one attempt
//! (a conditional write that counts it and leases it), posts it, and records how it ended with
//! an audit event, in one write; a failed attempt is due again after a backoff (on the queue when
//! that is within SQS's delay, else found by the sweep). A notification never touches its action.

use crate::domain::notify::{backoff_secs, DeliveryState, Notification};
use crate::domain::ActionId;
use crate::ports::clock::Clock;
use crate::ports::notify::Deliverer;
use crate::ports::queue::{ExecuteMessage, WorkQueue};
use crate::ports::store::{Store, TransitionError};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// SQS's longest message delay; a longer pause is left to the sweep.
const MAX_SQS_DELAY_SECS: i64 = 900;
/// A message may arrive this much before the time it was delayed to.
const EARLY_TOLERANCE_SECS: i64 = 2;

/// What became of a delivery message.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// An attempt was made and recorded (delivered, due again, or given up); the notification
    /// reports the move to this state.
    Made(crate::domain::Status),
    /// Nothing to do: delivered already, leased by another executor, or not due yet.
    Skipped(String),
    /// No such notification: the message is unusable.
    Unknown(String),
    /// The store could not be read or written: the message should come again.
    StoreDown(String),
}

pub struct NotificationService {
    store: Arc<dyn Store>,
    queue: Arc<dyn WorkQueue>,
    deliverer: Arc<dyn Deliverer>,
    clock: Arc<dyn Clock>,
}

impl NotificationService {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn WorkQueue>,
        deliverer: Arc<dyn Deliverer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { store, queue, deliverer, clock }
    }

    /// One attempt at the notification of `action_id` at `version`, if it is due.
    pub async fn deliver(&self, action_id: ActionId, version: u64, deadline: DateTime<Utc>) -> Attempt {
        let n = match self.store.notification(action_id, version).await {
            Ok(Some(n)) => n,
            Ok(None) => return Attempt::Unknown(format!("no notification {action_id}:{version}")),
            Err(e) => return Attempt::StoreDown(e.to_string()),
        };
        let now = self.clock.now();
        if n.state != DeliveryState::Pending {
            return Attempt::Skipped(format!("notification {} is {:?} already", n.event_id(), n.state));
        }
        if n.next_attempt_at > now + chrono::Duration::seconds(EARLY_TOLERANCE_SECS) {
            return Attempt::Skipped(format!("notification {} is leased or not due yet", n.event_id()));
        }
        let Some(claimed) = n.claimed(now) else {
            // The last attempt's executor died before it reported: give up now, or the
            // notification would stay pending (and due) for ever.
            let gave_up = n.abandoned();
            return match self.store.save_notification(n.attempts, &gave_up, true, now).await {
                Ok(()) => {
                    tracing::warn!(event_id = %n.event_id(), "notification given up: the last attempt never reported");
                    Attempt::Made(gave_up.to)
                }
                Err(TransitionError::Conflict) => Attempt::Skipped("another executor closed it".into()),
                Err(TransitionError::Store(e)) => Attempt::StoreDown(e.to_string()),
            };
        };
        match self.store.save_notification(n.attempts, &claimed, false, now).await {
            Ok(()) => {}
            Err(TransitionError::Conflict) => return Attempt::Skipped("another executor took this attempt".into()),
            Err(TransitionError::Store(e)) => return Attempt::StoreDown(e.to_string()),
        }
        let after = self.attempt(&claimed, deadline).await;
        let end = self.clock.now();
        match self.store.save_notification(claimed.attempts, &after, true, end).await {
            Ok(()) => {}
            // The lease ran out and another executor took over: its attempt stands.
            Err(TransitionError::Conflict) => return Attempt::Skipped("the attempt's lease ran out".into()),
            // Left leased: the sweep hands it on when the lease ends (the receiver may get it
            // twice; it deduplicates on event_id).
            Err(TransitionError::Store(e)) => {
                tracing::error!(error = %e, event_id = %after.event_id(), "recording a delivery failed");
                return Attempt::Skipped(format!("recording the delivery failed: {e}"));
            }
        }
        match after.state {
            DeliveryState::Delivered => {
                tracing::info!(event_id = %after.event_id(), attempts = after.attempts, "notification delivered")
            }
            DeliveryState::GaveUp => tracing::warn!(
                event_id = %after.event_id(),
                attempts = after.attempts,
                error = ?after.last_error,
                "notification given up"
            ),
            DeliveryState::Pending => {
                let pause = (after.next_attempt_at - end).num_seconds();
                if pause <= MAX_SQS_DELAY_SECS {
                    let message = ExecuteMessage::notification(after.action_id, after.version);
                    let delay = u32::try_from(pause.max(0)).unwrap_or(0);
                    if let Err(e) = self.queue.enqueue(&message, delay).await {
                        tracing::warn!(error = %e, event_id = %after.event_id(), "queueing a retry failed; the sweep will");
                    }
                }
            }
        }
        Attempt::Made(after.to)
    }

    /// Posts a claimed notification within the invocation's time; how it ended.
    async fn attempt(&self, claimed: &Notification, deadline: DateTime<Utc>) -> Notification {
        let body = claimed.body().to_string();
        let left = (deadline - self.clock.now()).to_std().unwrap_or_default();
        // Within the invocation, and well within the lease (no one else may post meanwhile).
        let lease = std::time::Duration::from_secs(crate::domain::notify::DELIVERY_LEASE_SECS.unsigned_abs() - 10);
        let budget = left.saturating_sub(std::time::Duration::from_secs(2)).min(lease);
        let event_id = claimed.event_id();
        let sent = tokio::time::timeout(
            budget,
            self.deliverer.deliver(&claimed.user_id, &claimed.url, &event_id, body.as_bytes()),
        )
        .await;
        let end = self.clock.now();
        match sent {
            Ok(Ok(())) => claimed.delivered(end),
            Ok(Err(e)) => {
                let pause = backoff_secs(claimed.attempts - 1, rand::random::<f64>(), e.retry_after_secs);
                claimed.failed(end, format!("{}: {}", e.code, e.message), !e.is_transient(), pause)
            }
            Err(_) => {
                let pause = backoff_secs(claimed.attempts - 1, rand::random::<f64>(), None);
                claimed.failed(
                    end,
                    "timeout: the attempt ran out of its time (invocation or lease)".into(),
                    false,
                    pause,
                )
            }
        }
    }
}

/// The sweep's part: hands every due notification (or one whose executor died) to an executor.
/// Returns how many were queued.
pub async fn queue_due(
    store: &dyn Store,
    queue: &dyn WorkQueue,
    now: DateTime<Utc>,
    limit: i32,
) -> Result<u32, String> {
    let due = store.due_notifications(now, limit).await.map_err(|e| e.to_string())?;
    let mut queued = 0;
    for n in due {
        let message = ExecuteMessage::notification(n.action_id, n.version);
        match queue.enqueue(&message, 0).await {
            Ok(_) => queued += 1,
            Err(e) => tracing::error!(error = %e, event_id = %n.event_id(), "queueing a due notification failed"),
        }
    }
    Ok(queued)
}
