//! Administration: the policy override and its audit stream, users' KYC flags and stored
//! credentials, each change on a system audit stream.

use super::*;

/// An administrative change to a user's profile (its fields, plus another item to write).
struct UserChange {
    set: Vec<(&'static str, AttributeValue)>,
    other: Option<Put>,
    to: &'static str,
    reason: String,
}

#[async_trait]
impl AdminStore for DynamoStore {
    /// The stored override as it is, parsed or not: an administrator can always see it and
    /// replace it, even after a release made it invalid.
    async fn policy_override_raw(&self) -> Result<Option<RawPolicy>, StoreError> {
        let found = self.item(keys::POLICY_PK, keys::POLICY_SK).await?;
        let Some(item) = found else { return Ok(None) };
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0);
        Ok(Some(RawPolicy {
            doc: text("doc"),
            version,
            updated_by: text("updated_by"),
            updated_at: text("updated_at"),
        }))
    }

    /// Stores a (validated) policy override if the stored version is still `before_version`,
    /// with its audit event in the same transaction.
    async fn put_policy(
        &self,
        before_version: u64,
        policy: &crate::policy::Policy,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, TransitionError> {
        let version = before_version + 1;
        let doc = serde_json::to_string(policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let put = Put::builder()
            .table_name(&self.table)
            .item(keys::PK, s(keys::POLICY_PK))
            .item(keys::SK, s(keys::POLICY_SK))
            .item("version", n(version))
            .item("doc", s(&doc))
            .item("updated_by", s(by))
            .item("updated_at", s(crate::domain::time::format_time(at)))
            .condition_expression("attribute_not_exists(pk) OR #version = :version")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", n(before_version))
            .build()
            .map_err(StoreError::from)?;
        let event = serde_json::json!({"from": before_version, "to": version, "actor": by,
            "reason": "policy replaced by an administrator", "detail": {"policy": policy}});
        let audit = self.put_stream_event(keys::POLICY_AUDIT_STREAM, version, at, event)?;
        let items =
            vec![TransactWriteItem::builder().put(put).build(), TransactWriteItem::builder().put(audit).build()];
        self.conditional_transaction(items).await.map(|()| version)
    }

    /// A page of an audit stream that is not an action's (`policy`, `circuit-breaker`, a
    /// user's), oldest first: at most `limit` events after sequence `after`, and the sequence
    /// to continue from when there are more.
    async fn system_trail(
        &self,
        stream: &str,
        after: u64,
        limit: i32,
    ) -> Result<(Vec<serde_json::Value>, Option<u64>), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.audit_table)
            .key_condition_expression("#pk = :pk AND #sk > :after")
            .expression_attribute_names("#pk", keys::AUDIT_PK)
            .expression_attribute_names("#sk", keys::AUDIT_SK)
            .expression_attribute_values(":pk", s(stream))
            .expression_attribute_values(":after", n(after))
            .limit(limit)
            .send()
            .await
            .map_err(aws_error)?;
        let events = out
            .items()
            .iter()
            .filter_map(|i| i.get("doc")?.as_s().ok().and_then(|d| serde_json::from_str(d).ok()))
            .collect();
        let next = out
            .last_evaluated_key()
            .and_then(|k| k.get(keys::AUDIT_SK))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok());
        Ok((events, next))
    }

    /// The user's Google OAuth access token, as the host application stored it.
    async fn google_token(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        let found = self.item(keys::profile_pk(user), keys::GOOGLE_CREDENTIAL_SK).await?;
        Ok(found.as_ref().and_then(|i| i.get("access_token")).and_then(|v| v.as_s().ok()).cloned())
    }

    /// Stores `user`'s Google token (write-only: it never appears in the audit event).
    async fn set_google_token(
        &self,
        user: &UserId,
        token: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let credential = Put::builder()
            .table_name(&self.table)
            .item(keys::PK, s(keys::profile_pk(user)))
            .item(keys::SK, s(keys::GOOGLE_CREDENTIAL_SK))
            .item("access_token", s(token))
            .item("updated_at", s(crate::domain::time::format_time(at)))
            .build()
            .map_err(StoreError::from)?;
        let change = UserChange {
            set: vec![],
            other: Some(credential),
            to: "google_token_stored",
            reason: "Google OAuth token stored".into(),
        };
        self.change_user(user, change, by, at).await
    }

    async fn kyc_verified(&self, user: &UserId) -> Result<bool, StoreError> {
        let found = self.item(keys::profile_pk(user), keys::PROFILE_SK).await?;
        Ok(found.as_ref().and_then(|i| i.get("kyc_verified")).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false))
    }

    async fn set_kyc_verified(
        &self,
        user: &UserId,
        verified: bool,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let set = vec![
            ("kyc_verified", AttributeValue::Bool(verified)),
            ("kyc_updated_by", s(by)),
            ("kyc_updated_at", s(crate::domain::time::format_time(at))),
        ];
        let (to, reason) =
            if verified { ("kyc_verified", "KYC verified") } else { ("kyc_unverified", "KYC withdrawn") };
        self.change_user(user, UserChange { set, other: None, to, reason: reason.into() }, by, at).await
    }

    async fn delegation(&self, approver: &str) -> Result<Option<crate::domain::approvers::Delegation>, StoreError> {
        let Some(user) = crate::domain::approvers::approver_user(approver) else { return Ok(None) };
        let found = self.item(keys::profile_pk(&user), keys::PROFILE_SK).await?;
        let text =
            |k: &str| found.as_ref().and_then(|i| i.get(k)).and_then(|v| v.as_s().ok()).filter(|v| !v.is_empty());
        let to = text("delegate_to").and_then(|t| crate::domain::EmailAddress::parse(t));
        let until =
            text("delegate_until").and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
        Ok(to.zip(until).map(|(to, until)| crate::domain::approvers::Delegation { to, until }))
    }

    async fn set_delegation(
        &self,
        approver: &str,
        delegation: Option<&crate::domain::approvers::Delegation>,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let user = crate::domain::approvers::approver_user(approver)
            .ok_or_else(|| TransitionError::Store(StoreError::Corrupt(format!("approver {approver}"))))?;
        let set = vec![
            ("delegate_to", s(delegation.map(|d| d.to.as_str().to_owned()).unwrap_or_default())),
            ("delegate_until", s(delegation.map(|d| crate::domain::time::format_time(d.until)).unwrap_or_default())),
        ];
        let (to, reason) = crate::domain::approvers::delegation_event(delegation);
        self.change_user(&user, UserChange { set, other: None, to, reason }, by, at).await
    }
}

impl DynamoStore {
    /// An administrative change to a user, with one event on the user's audit stream in the
    /// same transaction. The stream's sequence number is kept on the profile item, so two
    /// concurrent changes cannot take the same one (the loser retries).
    async fn change_user(
        &self,
        user: &UserId,
        change: UserChange,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let stream = keys::user_audit_stream(user);
        for _ in 0..5 {
            let profile = self.item(keys::profile_pk(user), keys::PROFILE_SK).await?;
            let field = |name: &str| profile.as_ref().and_then(|i| i.get(name));
            let seq: u64 = field("audit_seq").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
            let kyc = field("kyc_verified").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
            let from = if change.to.starts_with("kyc") {
                if kyc {
                    "kyc_verified"
                } else {
                    "kyc_unverified"
                }
            } else if change.to.starts_with("delegation") {
                "delegation"
            } else {
                "google_token"
            };
            let mut profile_update = Update::builder()
                .table_name(&self.table)
                .key(keys::PK, s(keys::profile_pk(user)))
                .key(keys::SK, s(keys::PROFILE_SK))
                .expression_attribute_values(":next", n(seq + 1));
            profile_update = match seq {
                0 => profile_update.condition_expression("attribute_not_exists(audit_seq)"),
                _ => {
                    profile_update.condition_expression("audit_seq = :seq").expression_attribute_values(":seq", n(seq))
                }
            };
            let mut sets = vec!["audit_seq = :next".to_owned()];
            for (i, (name, value)) in change.set.iter().enumerate() {
                sets.push(format!("#f{i} = :f{i}"));
                profile_update = profile_update
                    .expression_attribute_names(format!("#f{i}"), *name)
                    .expression_attribute_values(format!(":f{i}"), value.clone());
            }
            let profile_update = profile_update
                .update_expression(format!("SET {}", sets.join(", ")))
                .build()
                .map_err(StoreError::from)?;
            let event = serde_json::json!({"actor": by, "from": from, "to": change.to, "reason": change.reason});
            let audit = self.put_stream_event(&stream, seq + 1, at, event)?;
            let mut items = vec![
                TransactWriteItem::builder().update(profile_update).build(),
                TransactWriteItem::builder().put(audit).build(),
            ];
            if let Some(other) = change.other.clone() {
                items.push(TransactWriteItem::builder().put(other).build());
            }
            match self.conditional_transaction(items).await {
                Err(TransitionError::Conflict) => continue,
                done => return done,
            }
        }
        Err(TransitionError::Conflict)
    }

    /// An event of an audit stream that is not an action's (`event` gives actor, from, to,
    /// reason, detail; the stream, sequence number and time are added), written once.
    pub(super) fn put_stream_event(
        &self,
        stream: &str,
        seq: u64,
        at: DateTime<Utc>,
        mut event: serde_json::Value,
    ) -> Result<Put, StoreError> {
        event["stream"] = serde_json::json!(stream);
        event["seq"] = serde_json::json!(seq);
        event["at"] = serde_json::json!(crate::domain::time::format_time(at));
        Ok(Put::builder()
            .table_name(&self.audit_table)
            .item(keys::AUDIT_PK, s(stream))
            .item(keys::AUDIT_SK, n(seq))
            .item("at", s(crate::domain::time::format_time(at)))
            .item("doc", s(event.to_string()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::AUDIT_PK)
            .build()?)
    }
}
