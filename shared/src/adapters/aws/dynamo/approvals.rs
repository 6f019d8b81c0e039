//! Approval links: one record per token hash, consumed with the decision's transition.

use super::*;
use crate::domain::approval::{ApprovalRecord, ApprovalStatus, ApprovalUse, APPROVAL_RECORD_DAYS};

#[async_trait]
impl ApprovalStore for DynamoStore {
    /// Stores new approval links for an action (and closes an old one, if given and still
    /// pending) with the action's update and its audit note, if any, all or nothing.
    async fn reissue_link(
        &self,
        before: &Action,
        after: &Action,
        note: Option<&AuditEvent>,
        new_links: &[ApprovalRecord],
        old_link: Option<ApprovalUse<'_>>,
    ) -> Result<(), TransitionError> {
        let mut items = self.action_writes(before, after)?;
        for link in new_links {
            items.push(TransactWriteItem::builder().put(self.put_approval(link)?).build());
        }
        if let Some(note) = note {
            items.push(TransactWriteItem::builder().put(self.put_audit(note)?).build());
        }
        if let Some(used) = old_link {
            items.push(TransactWriteItem::builder().update(self.close_link(&used)?).build());
        }
        self.conditional_transaction(items).await
    }

    async fn get_approval(&self, token_hash: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let found = self.item(keys::approval_pk(token_hash), keys::APPROVAL_SK).await?;
        let Some(item) = found else { return Ok(None) };
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let time = |k: &str| text(k).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        let corrupt = || StoreError::Corrupt(format!("approval record {token_hash}"));
        Ok(Some(ApprovalRecord {
            token_hash: token_hash.to_owned(),
            action_id: text("action_id").and_then(|id| ActionId::parse(&id)).ok_or_else(corrupt)?,
            approver: text("approver").ok_or_else(corrupt)?,
            plan_digest: text("plan_digest").ok_or_else(corrupt)?,
            expires_at: time("expires_at").ok_or_else(corrupt)?,
            status: text("status").and_then(|st| ApprovalStatus::parse(&st)).ok_or_else(corrupt)?,
            decided_by: text("decided_by"),
            decided_at: time("decided_at"),
            // Records written before rounds existed belong to the first request.
            round: item.get("round").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0),
        }))
    }
}

impl DynamoStore {
    /// Uses up an approval link, on the condition that it is still pending.
    pub(super) fn close_link(&self, used: &ApprovalUse<'_>) -> Result<Update, StoreError> {
        Ok(Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::approval_pk(used.token_hash)))
            .key(keys::SK, s(keys::APPROVAL_SK))
            .update_expression("SET #status = :status, decided_by = :by, decided_at = :at")
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(used.status.as_str()))
            .expression_attribute_values(":pending", s(ApprovalStatus::Pending.as_str()))
            .expression_attribute_values(":by", s(used.by))
            .expression_attribute_values(":at", s(crate::domain::time::format_time(used.at)))
            .build()?)
    }

    pub(super) fn put_approval(&self, record: &ApprovalRecord) -> Result<Put, StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::approval_pk(&record.token_hash)));
        item.insert(keys::SK.into(), s(keys::APPROVAL_SK));
        item.insert("action_id".into(), s(record.action_id.to_string()));
        item.insert("approver".into(), s(&record.approver));
        item.insert("plan_digest".into(), s(&record.plan_digest));
        item.insert("expires_at".into(), s(crate::domain::time::format_time(record.expires_at)));
        item.insert("status".into(), s(record.status.as_str()));
        item.insert("round".into(), n(record.round));
        item.insert(
            keys::TTL.into(),
            n((record.expires_at + chrono::Duration::days(APPROVAL_RECORD_DAYS)).timestamp()),
        );
        Ok(Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()?)
    }
}
