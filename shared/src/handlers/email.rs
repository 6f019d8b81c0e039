//! `send_email` through SES v2. Irreversible: a sent mail cannot be recalled, and SES has no
//! idempotency key, so an unknown outcome is reported rather than retried blindly.

use super::{Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use crate::ports::mail::{Mail, MailFailure};
use serde_json::{json, Value};

pub struct SendEmail;

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

impl Handler for SendEmail {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        crate::validation::validate_payload("send_email", payload, "payload")
            .map_err(|e| HandlerError::permanent("invalid_payload", e.to_string()))
    }

    fn preview(&self, payload: &Value) -> String {
        crate::domain::catalog::describe("send_email", payload)
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        Reversibility::Irreversible
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn integration(&self, _: &Value) -> Option<String> {
        Some("ses".into())
    }

    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let mailer = ctx
                .deps
                .mailer
                .as_ref()
                .ok_or_else(|| HandlerError::permanent("not_configured", "no mail sender is configured"))?;
            let p = ctx.payload;
            let text = p.get("text").and_then(Value::as_str).map(str::to_owned);
            let html = p.get("html").and_then(Value::as_str).map(str::to_owned);
            let mail = Mail {
                to: strings(p.get("to")),
                cc: strings(p.get("cc")),
                subject: p.get("subject").and_then(Value::as_str).unwrap_or_default().to_owned(),
                text: text.clone().unwrap_or_else(|| html.clone().unwrap_or_default()),
                html: html.unwrap_or_else(|| {
                    format!("<pre>{}</pre>", crate::domain::html::escape(&text.unwrap_or_default()))
                }),
            };
            let message_id = mailer.send(&mail).await.map_err(|e| match e.failure {
                MailFailure::NotSentTransient => HandlerError::transient("ses_throttled", e.to_string()),
                MailFailure::NotSentPermanent => HandlerError::permanent("ses_rejected", e.to_string()),
                // Sending again could deliver it twice: a human checks.
                MailFailure::Unknown => HandlerError::unknown("ses_outcome_unknown", e.to_string()),
            })?;
            Ok(json!({"message_id": message_id}))
        })
    }

    fn rollback<'a>(
        &'a self,
        _: &'a StepContext<'a>,
        _: &'a Value,
        _: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        super::sent_mail_cannot_be_recalled()
    }
}
