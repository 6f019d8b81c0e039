//! Rollback snapshots: one item per step, kept for the rollback retention (TTL).

use super::*;

#[async_trait]
impl SnapshotStore for DynamoStore {
    /// The rollback snapshots of an action's steps that are still kept, by step index.
    async fn snapshots(&self, id: ActionId) -> Result<BTreeMap<usize, StoredSnapshot>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_values(":pk", s(keys::snapshot_pk(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_error)?;
        let mut snapshots = BTreeMap::new();
        for item in out.items() {
            let field = |name: &str| item.get(name).and_then(|v| v.as_s().ok().or_else(|| v.as_n().ok()));
            let corrupt = || StoreError::Corrupt(format!("snapshot item of {id}"));
            let index = field(keys::SK)
                .and_then(|sk| sk.strip_prefix("STEP#"))
                .and_then(|i| i.parse::<usize>().ok())
                .ok_or_else(corrupt)?;
            let snapshot = serde_json::from_str(field("doc").ok_or_else(corrupt)?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let expires_at = field(keys::TTL)
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .ok_or_else(corrupt)?;
            snapshots.insert(index, StoredSnapshot { snapshot, expires_at });
        }
        Ok(snapshots)
    }
}
