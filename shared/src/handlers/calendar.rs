//! Google Calendar event creation. The event id is derived from the step's idempotency key,
//! so a repeated attempt finds the event it already created instead of making a second one.
//! Rollback deletes the event.

use super::{Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use serde_json::{json, Value};

pub struct CreateEvent;

fn calendar_id(payload: &Value) -> &str {
    payload.get("calendar_id").and_then(Value::as_str).unwrap_or("primary")
}

/// Google accepts client-chosen ids of base32hex characters (a–v, 0–9), 5 to 1024 long.
pub fn event_id(idempotency_key: &str) -> String {
    format!("ag{}", &idempotency_key[..idempotency_key.len().min(40)])
}

fn events_url(ctx: &StepContext<'_>, calendar: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(calendar.as_bytes()).collect();
    format!("{}/calendars/{encoded}/events", ctx.deps.calendar_base.trim_end_matches('/'))
}

async fn send(ctx: &StepContext<'_>, request: reqwest::RequestBuilder) -> Result<(u16, String), HandlerError> {
    let token = ctx.google_token().await?;
    let response = request
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| HandlerError::from_reqwest(&e, "Google Calendar"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| HandlerError::from_reqwest(&e, "Google Calendar"))?;
    Ok((status, body))
}

impl Handler for CreateEvent {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        crate::validation::validate_payload("calendar.create_event", payload, "payload")
            .map_err(|e| HandlerError::permanent("invalid_payload", e.to_string()))
    }

    fn preview(&self, payload: &Value) -> String {
        crate::domain::catalog::describe("calendar.create_event", payload)
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        Reversibility::Reversible
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn integration(&self, _: &Value) -> Option<String> {
        Some("calendar".into())
    }

    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        // Creating something new: there is nothing to keep.
        Box::pin(async { Ok(Value::Null) })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let p = ctx.payload;
            let calendar = calendar_id(p);
            let id = event_id(&ctx.idempotency_key);
            let attendees: Vec<Value> = p
                .get("attendees")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|e| json!({"email": e}))
                .collect();
            let mut event = json!({
                "id": id,
                "summary": p.get("summary"),
                "start": {"dateTime": p.get("start")},
                "end": {"dateTime": p.get("end")},
            });
            for field in ["location", "description"] {
                if let Some(v) = p.get(field) {
                    event[field] = v.clone();
                }
            }
            if !attendees.is_empty() {
                event["attendees"] = Value::Array(attendees);
            }
            let (status, body) = send(ctx, ctx.deps.http.post(events_url(ctx, calendar)).json(&event)).await?;
            match status {
                200 | 201 => {}
                // Our id already exists: an earlier attempt created it.
                409 => {
                    let (status, body) =
                        send(ctx, ctx.deps.http.get(format!("{}/{id}", events_url(ctx, calendar)))).await?;
                    if status != 200 {
                        return Err(HandlerError::from_status(status, "Google Calendar", &body));
                    }
                }
                _ => return Err(HandlerError::from_status(status, "Google Calendar", &body)),
            }
            let created: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            Ok(json!({"calendar_id": calendar, "event_id": id, "html_link": created.get("htmlLink")}))
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
        _: &'a Value,
        result: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let calendar =
                result.get("calendar_id").and_then(Value::as_str).unwrap_or_else(|| calendar_id(ctx.payload));
            let id = result
                .get("event_id")
                .and_then(Value::as_str)
                .map_or_else(|| event_id(&ctx.idempotency_key), str::to_owned);
            let (status, body) = send(ctx, ctx.deps.http.delete(format!("{}/{id}", events_url(ctx, calendar)))).await?;
            match status {
                200 | 204 => Ok(json!({"deleted": id})),
                404 | 410 => Ok(json!({"deleted": id, "already_gone": true})),
                _ => Err(HandlerError::from_status(status, "Google Calendar", &body)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_ids_use_only_base32hex_characters() {
        let id =
            super::event_id(&crate::handlers::idempotency_key(crate::domain::ActionId::new_v7(chrono::Utc::now()), 3));
        assert!(id.len() >= 5 && id.chars().all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c)));
    }
}
