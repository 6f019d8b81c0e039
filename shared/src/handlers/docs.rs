//! `docs.create_document`: Drive `files.create` of a Docs document that carries the step's
//! idempotency key (`appProperties.actiongateKey`) from the moment it exists, then the Docs
//! API's `batchUpdate` with an `insertText` for the text. Before creating, it looks for a live
//! file with that tag and reuses it (inserting the text only if the document is still empty).
//! Drive's search is eventually consistent: a retry within seconds of a creation whose answer
//! was lost may miss it (the backoff makes that rare). Rollback moves the document to the trash.

use super::google_api::{self, api_url, call};
use super::{Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use reqwest::Method;
use serde_json::{json, Map, Value};

pub const ACTION_TYPE: &str = "docs.create_document";
/// The Drive app property holding the idempotency key of the step that created a document.
pub const KEY_PROPERTY: &str = "actiongateKey";
const DOCS: &str = "Google Docs";
const DRIVE: &str = "Google Drive";
/// A Google Docs document, as Drive names its type.
pub const DOCUMENT_MIME: &str = "application/vnd.google-apps.document";

pub struct CreateDocument;

/// A Drive search (`q`) for the live files tagged with `key`.
pub fn tagged_query(key: &str) -> String {
    let escaped = key.replace('\\', "\\\\").replace('\'', "\\'");
    format!("appProperties has {{ key='{KEY_PROPERTY}' and value='{escaped}' }} and trashed=false")
}

/// Where a person opens the document.
pub fn document_url(id: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!("https://docs.google.com/document/d/{encoded}/edit")
}

/// The text of a Docs API document (its body's text runs, in order).
pub fn body_text(document: &Value) -> String {
    let mut out = String::new();
    let content = document.pointer("/body/content").and_then(Value::as_array).into_iter().flatten();
    for element in content {
        let runs = element.pointer("/paragraph/elements").and_then(Value::as_array).into_iter().flatten();
        for run in runs {
            if let Some(text) = run.pointer("/textRun/content").and_then(Value::as_str) {
                out.push_str(text);
            }
        }
    }
    out
}

/// The `batchUpdate` body inserting `text` at the start of the document.
pub fn insert_text_request(text: &str) -> Value {
    json!({"requests": [{"insertText": {"location": {"index": 1}, "text": text}}]})
}

/// The live document an earlier attempt of this step created, if any.
async fn find_tagged(ctx: &StepContext<'_>, key: &str) -> Result<Option<String>, HandlerError> {
    let q = tagged_query(key);
    let url = api_url(&ctx.deps.drive_base, &["files"], &[("q", q.as_str()), ("fields", "files(id)")], DRIVE)?;
    let list = call(ctx, Method::GET, url, None, DRIVE).await?.into_object(DRIVE)?;
    Ok(list
        .get("files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("id").and_then(Value::as_str))
        .find(|id| !id.is_empty())
        .map(str::to_owned))
}

/// Creates an empty document tagged with the step's `key` in the same request (Drive
/// `files.create` with the Docs mime type and `appProperties`): whatever happens after, a
/// retry finds it. Its id.
async fn create(ctx: &StepContext<'_>, title: &str, key: &str) -> Result<String, HandlerError> {
    let url = api_url(&ctx.deps.drive_base, &["files"], &[("fields", "id"), ("supportsAllDrives", "true")], DRIVE)?;
    let mut properties = Map::new();
    properties.insert(KEY_PROPERTY.to_owned(), Value::String(key.to_owned()));
    let body = json!({"name": title, "mimeType": DOCUMENT_MIME, "appProperties": properties});
    let answer = call(ctx, Method::POST, url, Some(&body), DRIVE).await?;
    if !answer.is_success() {
        return Err(answer.error(DRIVE));
    }
    answer
        .json
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        // Tagged when made: the retry finds it by its key.
        .ok_or_else(|| HandlerError::transient("bad_response", "Google Drive answered the creation without an id"))
}

/// Sets the document's Drive file properties (`appProperties` merge at Drive).
async fn set_properties(ctx: &StepContext<'_>, id: &str, changes: Value) -> Result<(), HandlerError> {
    let url = api_url(&ctx.deps.drive_base, &["files", id], &[("fields", "id"), ("supportsAllDrives", "true")], DRIVE)?;
    let answer = call(ctx, Method::PATCH, url, Some(&changes), DRIVE).await?;
    if answer.is_success() {
        Ok(())
    } else {
        Err(answer.error(DRIVE))
    }
}

/// Moves the document to the trash; whether it was there to trash.
async fn trash(ctx: &StepContext<'_>, id: &str) -> Result<bool, HandlerError> {
    match set_properties(ctx, id, json!({"trashed": true})).await {
        Ok(()) => Ok(true),
        Err(e) if e.code == "http_404" => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the document already has text (an earlier attempt inserted it).
async fn has_text(ctx: &StepContext<'_>, id: &str) -> Result<bool, HandlerError> {
    let url = api_url(&ctx.deps.docs_base, &["documents", id], &[], DOCS)?;
    let answer = call(ctx, Method::GET, url, None, DOCS).await?;
    if !answer.is_success() {
        return Err(answer.error(DOCS));
    }
    // Larger than the cap: certainly not empty.
    Ok(answer.truncated || !body_text(&answer.json).trim().is_empty())
}

async fn insert_text(ctx: &StepContext<'_>, id: &str, text: &str) -> Result<(), HandlerError> {
    let segment = format!("{id}:batchUpdate");
    let url = api_url(&ctx.deps.docs_base, &["documents", segment.as_str()], &[], DOCS)?;
    let answer = call(ctx, Method::POST, url, Some(&insert_text_request(text)), DOCS).await?;
    if answer.is_success() {
        Ok(())
    } else {
        Err(answer.error(DOCS))
    }
}

impl Handler for CreateDocument {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        google_api::check(ACTION_TYPE, payload)
    }

    fn preview(&self, payload: &Value) -> String {
        google_api::preview(ACTION_TYPE, payload)
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        Reversibility::Reversible
    }

    /// A repeated attempt finds the document the first one tagged.
    fn idempotent(&self) -> bool {
        true
    }

    fn integration(&self, _: &Value) -> Option<String> {
        Some("docs".into())
    }

    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        // Creating something new: there is nothing to keep.
        Box::pin(async { Ok(Value::Null) })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let p = ctx.payload;
            google_api::check(ACTION_TYPE, p)?;
            let title = google_api::field(p, "title");
            let text = google_api::field(p, "text");
            let key = ctx.idempotency_key.as_str();
            let (id, reused) = match find_tagged(ctx, key).await? {
                Some(id) => (id, true),
                None => (create(ctx, title, key).await?, false),
            };
            let mut text_inserted = false;
            // A reused document may have its text already (a retry after the insert).
            let already = reused && has_text(ctx, &id).await?;
            if !text.is_empty() && !already {
                insert_text(ctx, &id, text).await?;
                text_inserted = true;
            }
            Ok(json!({"document_id": id, "url": document_url(&id), "reused": reused, "text_inserted": text_inserted}))
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
        _: &'a Value,
        result: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let id = match result.get("document_id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
                Some(id) => id.to_owned(),
                None => match find_tagged(ctx, &ctx.idempotency_key).await? {
                    Some(id) => id,
                    None => return Ok(json!({"document_id": Value::Null, "changed": false, "already_gone": true})),
                },
            };
            if trash(ctx, &id).await? {
                Ok(json!({"document_id": id, "trashed": true, "changed": true}))
            } else {
                Ok(json!({"document_id": id, "changed": false, "already_gone": true}))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_query_names_the_key_and_skips_the_trash() {
        assert_eq!(
            tagged_query("abc123"),
            "appProperties has { key='actiongateKey' and value='abc123' } and trashed=false"
        );
        assert_eq!(
            tagged_query("a'b"),
            "appProperties has { key='actiongateKey' and value='a\\'b' } and trashed=false"
        );
    }

    #[test]
    fn the_text_of_a_document_is_read_from_its_runs() {
        let doc = json!({"documentId": "d1", "body": {"content": [
            {"endIndex": 1, "sectionBreak": {}},
            {"paragraph": {"elements": [{"textRun": {"content": "Hello "}}, {"textRun": {"content": "world\n"}}]}}
        ]}});
        assert_eq!(body_text(&doc), "Hello world\n");
        let empty = json!({"body": {"content": [{"paragraph": {"elements": [{"textRun": {"content": "\n"}}]}}]}});
        assert!(body_text(&empty).trim().is_empty());
        assert_eq!(body_text(&json!({})), "");
    }

    #[test]
    fn text_goes_in_at_the_start() {
        assert_eq!(insert_text_request("hi")["requests"][0]["insertText"]["location"]["index"], 1);
        assert_eq!(document_url("d-1_x"), "https://docs.google.com/document/d/d-1_x/edit");
    }
}
