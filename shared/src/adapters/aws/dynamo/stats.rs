//! Daily outcome counters, updated in the transaction of the transition that produces them.

use super::*;

impl DynamoStore {
    /// Counter updates for a transition that finishes work (`completed`, `failed`,
    /// `rolled_back`), for the user and for everyone, on the day it happened.
    pub(super) fn stats_updates(&self, before: &Action, after: &Action) -> Result<Vec<Update>, StoreError> {
        let fields = crate::domain::stats::outcome_fields(before, after);
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let day = after.updated_at.date_naive();
        let mut updates = Vec::new();
        for scope in [keys::STATS_ALL.to_owned(), keys::user_stats_scope(&after.user_id)] {
            let mut builder = Update::builder()
                .table_name(&self.table)
                .key(keys::PK, s(keys::stats_pk(&scope, day)))
                .key(keys::SK, s(keys::STATS_SK))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":ttl", n((after.updated_at + chrono::Duration::days(400)).timestamp()));
            let mut adds = Vec::new();
            for (i, field) in fields.iter().enumerate() {
                builder = builder.expression_attribute_names(format!("#f{i}"), field);
                adds.push(format!("#f{i} :one"));
            }
            builder = builder
                .expression_attribute_names("#ttl", keys::TTL)
                .update_expression(format!("ADD {} SET #ttl = :ttl", adds.join(", ")));
            updates.push(builder.build()?);
        }
        Ok(updates)
    }
}

#[async_trait]
impl StatsStore for DynamoStore {
    /// One UTC day's outcome counters for `scope` ([`keys::STATS_ALL`] or
    /// [`keys::user_stats_scope`]).
    async fn daily_stats(&self, scope: &str, day: chrono::NaiveDate) -> Result<BTreeMap<String, u64>, StoreError> {
        let found = self.item(keys::stats_pk(scope, day), keys::STATS_SK).await?;
        Ok(found
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k, v.as_n().ok()?.parse().ok()?)))
            .filter(|(k, _)| k != keys::TTL)
            .collect())
    }
}
