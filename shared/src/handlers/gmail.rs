//! Gmail label changes through `users.messages.modify`. The snapshot is the message's label
//! ids before the change; rollback puts back exactly that set. Setting labels is naturally
//! idempotent, so a repeated attempt cannot double an effect.

use super::{Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub use crate::domain::google_payloads::{LabelChange, LABEL_CHANGES as CHANGES};

pub struct GmailModify {
    pub action_type: &'static str,
    pub change: LabelChange,
}

fn message_id(payload: &Value) -> Result<&str, HandlerError> {
    payload
        .get("message_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .ok_or_else(|| HandlerError::permanent("invalid_payload", "message_id is missing or malformed"))
}

fn message_url(ctx: &StepContext<'_>, id: &str) -> String {
    format!("{}/gmail/v1/users/me/messages/{id}", ctx.deps.gmail_base.trim_end_matches('/'))
}

/// Sends a Gmail API request with the user's token; the label ids of the message it returns.
/// `strict`: an unreadable answer is an error (a snapshot must be exact); otherwise the change
/// was made and an unreadable answer just reports no labels.
async fn labels_from(
    ctx: &StepContext<'_>,
    request: reqwest::RequestBuilder,
    strict: bool,
) -> Result<BTreeSet<String>, HandlerError> {
    let token = ctx.google_token().await?;
    let response =
        request.bearer_auth(token.expose()).send().await.map_err(|e| HandlerError::from_reqwest(&e, "Gmail"))?;
    let status = response.status().as_u16();
    // A message's labels fit in far less; a larger answer is cut (and then fails to parse).
    let (bytes, _) = super::read_capped(response, 256 * 1024, "Gmail").await?;
    let body = String::from_utf8_lossy(&bytes).into_owned();
    if status != 200 {
        return Err(HandlerError::from_status(status, "Gmail", &body));
    }
    let v: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) if strict => return Err(HandlerError::permanent("bad_response", format!("Gmail: {e}"))),
        Err(_) => Value::Null,
    };
    Ok(labels_of(v.get("labelIds").unwrap_or(&Value::Null)))
}

async fn current_labels(ctx: &StepContext<'_>, id: &str) -> Result<BTreeSet<String>, HandlerError> {
    labels_from(ctx, ctx.deps.http.get(format!("{}?format=minimal", message_url(ctx, id))), true).await
}

async fn modify(
    ctx: &StepContext<'_>,
    id: &str,
    add: &BTreeSet<String>,
    remove: &BTreeSet<String>,
) -> Result<BTreeSet<String>, HandlerError> {
    let request = ctx.deps.http.post(format!("{}/modify", message_url(ctx, id)));
    labels_from(ctx, request.json(&json!({"addLabelIds": add, "removeLabelIds": remove})), false).await
}

fn labels_of(v: &Value) -> BTreeSet<String> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

impl Handler for GmailModify {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        message_id(payload)?;
        if self.change.payload_labels && labels_of(payload.get("label_ids").unwrap_or(&Value::Null)).is_empty() {
            return Err(HandlerError::permanent("invalid_payload", "label_ids must name at least one label"));
        }
        Ok(())
    }

    fn preview(&self, payload: &Value) -> String {
        crate::domain::catalog::describe(self.action_type, payload)
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        Reversibility::Reversible
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn integration(&self, _: &Value) -> Option<String> {
        Some("gmail".into())
    }

    fn snapshot<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let id = message_id(ctx.payload)?;
            Ok(json!({"message_id": id, "label_ids": current_labels(ctx, id).await?}))
        })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let id = message_id(ctx.payload)?;
            let mut add: BTreeSet<String> = self.change.add.iter().map(|s| (*s).to_owned()).collect();
            if self.change.payload_labels {
                add.extend(labels_of(ctx.payload.get("label_ids").unwrap_or(&Value::Null)));
            }
            let remove: BTreeSet<String> = self.change.remove.iter().map(|s| (*s).to_owned()).collect();
            let after = modify(ctx, id, &add, &remove).await?;
            Ok(json!({"message_id": id, "label_ids": after}))
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
        snapshot: &'a Value,
        _: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let id = message_id(ctx.payload)?;
            let before = labels_of(snapshot.get("label_ids").unwrap_or(&Value::Null));
            let now = current_labels(ctx, id).await?;
            let add: BTreeSet<String> = before.difference(&now).cloned().collect();
            let remove: BTreeSet<String> = now.difference(&before).cloned().collect();
            if add.is_empty() && remove.is_empty() {
                return Ok(json!({"message_id": id, "label_ids": now, "changed": false}));
            }
            let restored = modify(ctx, id, &add, &remove).await?;
            Ok(json!({"message_id": id, "label_ids": restored, "changed": true}))
        })
    }
}
