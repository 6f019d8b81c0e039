//! Per-integration circuit breakers: one item each under one partition (`INTEGRATION` /
//! `<name>`), so listing them is one query. Successes are counted on the item without reading
//! it; a failure reads, decides and writes conditioned on the version read.

use super::*;
use crate::domain::integrations::IntegrationBreaker;

impl DynamoStore {
    /// The item's document (default when never saved) with its counted successes folded in.
    fn integration_from(item: &Item, window: usize) -> Result<IntegrationBreaker, StoreError> {
        let mut doc: IntegrationBreaker = match item.get("doc").and_then(|v| v.as_s().ok()) {
            None => IntegrationBreaker::default(),
            Some(doc) => serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("integration: {e}")))?,
        };
        let successes = item
            .get(keys::BREAKER_SUCCESSES)
            .and_then(|v| v.as_n().ok())
            .map(|v| v.parse::<i64>().map_err(|e| StoreError::Corrupt(format!("integration successes: {e}"))))
            .transpose()?
            .unwrap_or(0);
        doc.breaker.absorbed = 0;
        doc.breaker.absorb(u64::try_from(successes).unwrap_or(0), window);
        Ok(doc)
    }
}

#[async_trait]
impl IntegrationStore for DynamoStore {
    async fn integration(&self, name: &str, window: usize) -> Result<IntegrationBreaker, StoreError> {
        match self.item(keys::INTEGRATION_PK, name).await? {
            Some(item) => Self::integration_from(&item, window),
            None => Ok(IntegrationBreaker::default()),
        }
    }

    async fn integration_success(&self, name: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::INTEGRATION_PK))
            .key(keys::SK, s(name))
            .update_expression("ADD #successes :one")
            .expression_attribute_names("#successes", keys::BREAKER_SUCCESSES)
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    async fn save_integration(
        &self,
        name: &str,
        before_version: u64,
        after: &IntegrationBreaker,
        change: Option<(&str, &str, &str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let doc = serde_json::to_string(after).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The item may exist without a version: successes were counted before the first save.
        let condition = if before_version == 0 { "attribute_not_exists(#version)" } else { "#version = :before" };
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::INTEGRATION_PK))
            .key(keys::SK, s(name))
            .update_expression("SET #version = :version, #doc = :doc ADD #successes :absorbed")
            .condition_expression(condition)
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#doc", "doc")
            .expression_attribute_names("#successes", keys::BREAKER_SUCCESSES)
            .expression_attribute_values(":version", n(after.version()))
            .expression_attribute_values(":doc", s(doc))
            .expression_attribute_values(":absorbed", n(-i64::try_from(after.breaker.absorbed).unwrap_or(i64::MAX)));
        if before_version != 0 {
            update = update.expression_attribute_values(":before", n(before_version));
        }
        let mut items = vec![TransactWriteItem::builder().update(update.build().map_err(StoreError::from)?).build()];
        if let Some((from, to, actor, reason)) = change {
            let event = serde_json::json!({"actor": actor, "from": from, "to": to, "reason": reason});
            let stream = crate::domain::streams::integration_audit_stream(name);
            items.push(
                TransactWriteItem::builder().put(self.put_stream_event(&stream, after.version(), at, event)?).build(),
            );
        }
        self.conditional_transaction(items).await
    }

    async fn integrations(&self, limit: i32, window: usize) -> Result<Vec<(String, IntegrationBreaker)>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_values(":pk", s(keys::INTEGRATION_PK))
            .limit(limit.max(1))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_error)?;
        let mut found = Vec::with_capacity(out.items().len());
        for item in out.items() {
            let name = item
                .get(keys::SK)
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| StoreError::Corrupt("integration item without a name".into()))?;
            found.push((name.clone(), Self::integration_from(item, window)?));
        }
        Ok(found)
    }
}
