//! Daily outcome counters, updated in the transaction of the transition that produces them.

use super::*;

impl Store {
    /// Counter updates for a transition that finishes work (`completed`, `failed`,
    /// `rolled_back`), for the user and for everyone, on the day it happened.
    pub(super) fn stats_updates(&self, before: &Action, after: &Action) -> Result<Vec<Update>, StoreError> {
        if before.status == after.status {
            return Ok(Vec::new());
        }
        let t = &after.action_type;
        let auto = after.tier == Some(crate::domain::Tier::Auto);
        let fields: Vec<String> = match after.status {
            Status::Completed => vec![
                if auto { "auto_executed".into() } else { "approved_executed".into() },
                format!("t#{t}#executed"),
                format!("t#{t}#succeeded"),
            ],
            Status::Failed => vec!["failed".into(), format!("t#{t}#executed"), format!("t#{t}#failed")],
            Status::RolledBack => vec!["rolled_back".into(), format!("t#{t}#rolled_back")],
            _ => return Ok(Vec::new()),
        };
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

    /// One UTC day's outcome counters for `scope` ([`keys::STATS_ALL`] or
    /// [`keys::user_stats_scope`]).
    pub async fn daily_stats(&self, scope: &str, day: chrono::NaiveDate) -> Result<BTreeMap<String, u64>, StoreError> {
        let found = self.item(keys::stats_pk(scope, day), keys::STATS_SK).await?;
        Ok(found
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k, v.as_n().ok()?.parse().ok()?)))
            .filter(|(k, _)| k != keys::TTL)
            .collect())
    }
}
