//! `tasks.create` through Google Tasks (`tasks.insert`). Google Tasks has no client-chosen ids
//! and no search by property, so the handler marks what it creates: the task's notes end with
//! a line `[actiongate:<first 16 characters of the step's idempotency key>]`. Before creating,
//! it lists the task list (completed and hidden tasks too) and reuses a task carrying the
//! marker, so a repeated attempt never makes a second task. Rollback deletes the task.

use super::google_api::{self, api_url, call};
use super::{Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use crate::domain::google_payloads::DEFAULT_TASKLIST;
use reqwest::Method;
use serde_json::{json, Value};

pub const ACTION_TYPE: &str = "tasks.create";
const WHAT: &str = "Google Tasks";
/// Pages of 100 tasks read while looking for the marker.
const MAX_PAGES: usize = 20;

pub struct CreateTask;

/// The marker line of the step with `idempotency_key`.
pub fn marker(idempotency_key: &str) -> String {
    let short: String = idempotency_key.chars().take(16).collect();
    format!("[actiongate:{short}]")
}

/// The notes sent to Google: the payload's notes, then the marker on its own line.
pub fn notes_with_marker(notes: Option<&str>, marker: &str) -> String {
    match notes.map(str::trim_end).filter(|n| !n.is_empty()) {
        Some(notes) => format!("{notes}\n\n{marker}"),
        None => marker.to_owned(),
    }
}

/// Whether a task's notes end with `marker`.
pub fn has_marker(notes: &str, marker: &str) -> bool {
    notes.trim_end().ends_with(marker)
}

/// The task carrying `marker` among one page of `tasks.list`.
pub fn marked_task<'a>(page: &'a Value, marker: &str) -> Option<&'a Value> {
    page.get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|task| task.get("notes").and_then(Value::as_str).is_some_and(|n| has_marker(n, marker)))
}

fn tasklist(payload: &Value) -> &str {
    payload.get("tasklist").and_then(Value::as_str).filter(|l| !l.is_empty()).unwrap_or(DEFAULT_TASKLIST)
}

/// The task an earlier attempt of this step created, if any.
async fn find_marked(ctx: &StepContext<'_>, list: &str, marker: &str) -> Result<Option<Value>, HandlerError> {
    let mut page_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let url = {
            let mut query = vec![("showCompleted", "true"), ("showHidden", "true"), ("maxResults", "100")];
            if let Some(token) = page_token.as_deref() {
                query.push(("pageToken", token));
            }
            api_url(&ctx.deps.tasks_base, &["lists", list, "tasks"], &query, WHAT)?
        };
        let page = call(ctx, Method::GET, url, None, WHAT).await?.into_object(WHAT)?;
        if let Some(task) = marked_task(&page, marker) {
            return Ok(Some(task.clone()));
        }
        match page.get("nextPageToken").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            Some(token) => page_token = Some(token.to_owned()),
            None => return Ok(None),
        }
    }
    Ok(None)
}

fn outcome(list: &str, task: &Value, reused: bool) -> Result<Value, HandlerError> {
    let id =
        task.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()).ok_or_else(|| {
            HandlerError::unknown("bad_response", "Google Tasks answered the creation without a task id")
        })?;
    Ok(json!({"tasklist": list, "task_id": id, "reused": reused, "web_view_link": task.get("webViewLink")}))
}

impl Handler for CreateTask {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        google_api::check(ACTION_TYPE, payload)
    }

    fn preview(&self, payload: &Value) -> String {
        google_api::preview(ACTION_TYPE, payload)
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        Reversibility::Reversible
    }

    /// A repeated attempt finds the task the first one marked.
    fn idempotent(&self) -> bool {
        true
    }

    fn integration(&self, _: &Value) -> Option<String> {
        Some("tasks".into())
    }

    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        // Creating something new: there is nothing to keep.
        Box::pin(async { Ok(Value::Null) })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let p = ctx.payload;
            google_api::check(ACTION_TYPE, p)?;
            let list = tasklist(p);
            let marker = marker(&ctx.idempotency_key);
            if let Some(task) = find_marked(ctx, list, &marker).await? {
                return outcome(list, &task, true);
            }
            let mut task = json!({
                "title": google_api::field(p, "title"),
                "notes": notes_with_marker(p.get("notes").and_then(Value::as_str), &marker),
            });
            if let Some(due) = p.get("due").and_then(Value::as_str) {
                task["due"] = json!(due);
            }
            let url = api_url(&ctx.deps.tasks_base, &["lists", list, "tasks"], &[], WHAT)?;
            let answer = call(ctx, Method::POST, url, Some(&task), WHAT).await?;
            if !answer.is_success() {
                return Err(answer.error(WHAT));
            }
            outcome(list, &answer.json, false)
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
        _: &'a Value,
        result: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let list = result
                .get("tasklist")
                .and_then(Value::as_str)
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| tasklist(ctx.payload));
            let id = match result.get("task_id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
                Some(id) => id.to_owned(),
                None => {
                    let marker = marker(&ctx.idempotency_key);
                    match find_marked(ctx, list, &marker).await? {
                        Some(task) => task.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        None => return Ok(json!({"tasklist": list, "changed": false, "already_gone": true})),
                    }
                }
            };
            if id.is_empty() {
                return Ok(json!({"tasklist": list, "changed": false, "already_gone": true}));
            }
            let url = api_url(&ctx.deps.tasks_base, &["lists", list, "tasks", id.as_str()], &[], WHAT)?;
            let answer = call(ctx, Method::DELETE, url, None, WHAT).await?;
            match answer.status {
                200..=299 => Ok(json!({"tasklist": list, "deleted": id, "changed": true})),
                404 | 410 => Ok(json!({"tasklist": list, "deleted": id, "changed": false, "already_gone": true})),
                _ => Err(answer.error(WHAT)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_the_last_line_of_the_notes() {
        let key = crate::handlers::idempotency_key(crate::domain::ActionId::new_v7(chrono::Utc::now()), 0);
        let m = marker(&key);
        assert_eq!(m.len(), "[actiongate:]".len() + 16);
        assert!(m.starts_with("[actiongate:") && m.ends_with(']'));
        assert_eq!(notes_with_marker(Some("Bring the forms\n"), &m), format!("Bring the forms\n\n{m}"));
        assert_eq!(notes_with_marker(None, &m), m);
        assert_eq!(notes_with_marker(Some("  "), &m), m);
        assert!(has_marker(&format!("x\n\n{m}\n"), &m));
        assert!(!has_marker(&format!("{m} then more"), &m));
        assert_eq!(marker("short"), "[actiongate:short]");
    }

    #[test]
    fn a_marked_task_is_found_in_a_page() {
        let page = json!({"items": [
            {"id": "t1", "title": "a"},
            {"id": "t2", "notes": "other\n\n[actiongate:0000000000000000]"},
            {"id": "t3", "notes": "mine\n\n[actiongate:abcdefabcdefabcd]"}
        ]});
        assert_eq!(marked_task(&page, "[actiongate:abcdefabcdefabcd]").and_then(|t| t.get("id")), Some(&json!("t3")));
        assert_eq!(marked_task(&page, "[actiongate:ffffffffffffffff]"), None);
        assert_eq!(marked_task(&json!({}), "[actiongate:x]"), None);
    }

    #[test]
    fn the_default_list_is_used_when_none_is_named() {
        assert_eq!(tasklist(&json!({"title": "t"})), "@default");
        assert_eq!(tasklist(&json!({"title": "t", "tasklist": "L1"})), "L1");
        assert_eq!(outcome("@default", &json!({}), false).unwrap_err().kind, crate::handlers::ErrorKind::Unknown);
    }
}
