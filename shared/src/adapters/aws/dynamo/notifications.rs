//! Status notifications (`crate::domain::notify`): one item each under the action's
//! notification partition (`NOTIFY#<id>` / the version), recorded in the transaction of the move
//! it reports; a pending one sits in the sparse `due` index (`DUE#notify`) so the sweep finds
//! deliveries that are due or whose executor died, without a scan.

use super::*;
use crate::domain::notify::{
    notification_stream, recorded_by, DeliveryState, Notification, NOTIFICATION_RETENTION_DAYS,
};

impl DynamoStore {
    /// The item of `n`: its document, state and attempts as attributes (for conditions), in the
    /// `due` index while pending, with a TTL once it is not.
    fn notification_item(&self, n: &Notification) -> Result<Item, StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::notification_pk(n.action_id)));
        item.insert(keys::SK.into(), s(keys::notification_sk(n.version)));
        item.insert("state".into(), s(state_name(n.state)));
        item.insert("attempts".into(), n_attr(n.attempts));
        let doc = serde_json::to_string(n).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.insert("doc".into(), s(doc));
        if n.state == DeliveryState::Pending {
            let (due_pk, due_sk) = keys::notification_due(n);
            item.insert(keys::DUE_PK.into(), s(due_pk));
            item.insert(keys::DUE_SK.into(), s(due_sk));
        } else {
            let end = n.delivered_at.unwrap_or(n.next_attempt_at) + chrono::Duration::days(NOTIFICATION_RETENTION_DAYS);
            item.insert(keys::TTL.into(), n_attr(end.timestamp()));
        }
        Ok(item)
    }

    /// The put recording the notification a move from `before` to `after` reports, if any.
    pub(super) fn notification_write(
        &self,
        before: &Action,
        after: &Action,
        events: &[AuditEvent],
    ) -> Result<Option<(TransactWriteItem, Notification)>, StoreError> {
        let Some(n) = recorded_by(before, after, events) else { return Ok(None) };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.notification_item(&n)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        Ok(Some((TransactWriteItem::builder().put(put).build(), n)))
    }

    /// After a committed write that recorded `n`: asks an executor to deliver it now (the sweep
    /// finds it later if this message is lost).
    pub(super) async fn announce(&self, n: Option<&Notification>) {
        if let (Some(n), Some(queue)) = (n, &self.delivery_queue) {
            crate::ports::notify::queue_delivery(queue.as_ref(), n).await;
        }
    }
}

fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::GaveUp => "gave_up",
    }
}

fn n_attr(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn notification_from(item: &Item) -> Result<Notification, StoreError> {
    let doc = item
        .get("doc")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Corrupt("notification item without doc".into()))?;
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("notification: {e}")))
}

#[async_trait]
impl NotificationStore for DynamoStore {
    async fn notifications(&self, id: ActionId) -> Result<Vec<Notification>, StoreError> {
        self.whole_partition(&self.table, keys::PK, keys::notification_pk(id))
            .await?
            .iter()
            .map(notification_from)
            .collect()
    }

    async fn notification(&self, id: ActionId, version: u64) -> Result<Option<Notification>, StoreError> {
        let item = self.item(keys::notification_pk(id), &keys::notification_sk(version)).await?;
        item.as_ref().map(notification_from).transpose()
    }

    async fn due_notifications(&self, now: DateTime<Utc>, limit: i32) -> Result<Vec<Notification>, StoreError> {
        let items = self.due_items(keys::NOTIFICATION_DUE_PK.to_owned(), now, limit).await?;
        let mut found = Vec::new();
        for item in &items {
            match notification_from(item) {
                Ok(n) => found.push(n),
                Err(e) => {
                    // Out of the index (it stays in the table for a human), so it never fills
                    // the sweep's batches.
                    tracing::error!(error = %e, "an unreadable notification leaves the due index");
                    if let (Some(pk), Some(sk)) = (item.get(keys::PK), item.get(keys::SK)) {
                        self.leave_due_index(pk, sk).await;
                    }
                }
            }
        }
        Ok(found)
    }

    async fn save_notification(
        &self,
        before_attempts: u32,
        after: &Notification,
        audit: bool,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.notification_item(after)?))
            .condition_expression("#state = :pending AND #attempts = :attempts")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":attempts", n_attr(before_attempts))
            .build()
            .map_err(StoreError::from)?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        if audit {
            let stream = notification_stream(after.action_id);
            let event = self.put_stream_event(&stream, after.attempt_seq(), at, after.attempt_event())?;
            items.push(TransactWriteItem::builder().put(event).build());
        }
        self.conditional_transaction(items).await
    }
}
