//! Stateful fakes of the Google APIs the Workspace handlers call, answering as Google does
//! (errors are `{"error": {"code", "message"}}`):
//!
//! - Gmail: `GET users/me/messages/{id}?format=metadata|raw` for the messages of the fake
//!   Gmail (synthesized headers: `From: sender-<id>@example.com`, `Subject: Subject <id>`,
//!   `Message-ID: <<id>@mail.example>`, thread `thread-<id>`), and `POST users/me/messages/send`
//!   (every message sent is kept, decoded, in [`GoogleState::sent`]);
//! - Drive v3: `files.get`, `files.update` (`addParents`, `removeParents`, `trashed`,
//!   `appProperties`, `name`) and `files.list` with `q` of the form
//!   `appProperties has { key='K' and value='V' } [and trashed=false|true]`;
//! - Docs v1: `documents.create`, `documents.get`, `documents.batchUpdate` (`insertText`);
//!   a document is also a Drive file;
//! - Tasks v1: `tasks.list` (paged), `tasks.insert`, `tasks.delete`.
//!
//! [`route`] answers `None` for any other request, so the caller's router goes on.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
pub const DOCUMENT_MIME: &str = "application/vnd.google-apps.document";

/// A Drive file of the fake.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriveFile {
    pub name: String,
    pub parents: Vec<String>,
    pub trashed: bool,
    pub app_properties: BTreeMap<String, String>,
    pub mime_type: String,
}

impl DriveFile {
    /// As Drive shows it.
    pub fn to_json(&self, id: &str) -> Value {
        json!({"kind": "drive#file", "id": id, "name": self.name, "parents": self.parents, "trashed": self.trashed,
               "appProperties": self.app_properties, "mimeType": self.mime_type})
    }
}

#[derive(Default, Debug)]
pub struct GoogleState {
    /// Every message sent: `id`, `threadId`, `headers` (name → decoded value, first of each),
    /// `to`, `subject`, `text`, `html`, `attachments` (mime types), `forwarded` (the
    /// attached original's `From`/`Subject`, for a forward) and `raw` (the message as sent).
    pub sent: Vec<Value>,
    /// Drive file id → file (documents included).
    pub files: BTreeMap<String, DriveFile>,
    /// Document id → its text (without the final newline every document has).
    pub docs: BTreeMap<String, String>,
    /// (task list, task id) → task.
    pub tasks: BTreeMap<(String, String), Value>,
    next_id: u64,
}

impl GoogleState {
    /// Adds (or resets) a Drive file.
    pub fn seed_file(&mut self, id: &str, name: &str, parents: &[&str]) {
        self.files.insert(
            id.to_owned(),
            DriveFile {
                name: name.to_owned(),
                parents: parents.iter().map(|p| (*p).to_owned()).collect(),
                mime_type: "application/octet-stream".to_owned(),
                ..DriveFile::default()
            },
        );
    }

    /// Adds (or resets) a Drive folder.
    pub fn seed_folder(&mut self, id: &str, name: &str, parents: &[&str]) {
        self.seed_file(id, name, parents);
        if let Some(f) = self.files.get_mut(id) {
            f.mime_type = FOLDER_MIME.to_owned();
        }
    }

    /// Everything, for a state endpoint.
    pub fn to_json(&self) -> Value {
        let files: Map<String, Value> = self.files.iter().map(|(id, f)| (id.clone(), f.to_json(id))).collect();
        let tasks: Map<String, Value> =
            self.tasks.iter().map(|((l, id), t)| (format!("{l}/{id}"), t.clone())).collect();
        json!({"sent": self.sent, "files": files, "docs": self.docs, "tasks": tasks})
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }
}

pub type Answer = (u16, Value);

fn error(status: u16, message: &str) -> Answer {
    let reason = match status {
        400 => "badRequest",
        403 => "forbidden",
        404 => "notFound",
        _ => "error",
    };
    (status, json!({"error": {"code": status, "message": message, "errors": [{"message": message, "reason": reason}]}}))
}

/// The decoded pairs of a query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Self {
        Self(url::form_urlencoded::parse(query.as_bytes()).into_owned().collect())
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// A comma-separated list.
    fn list(&self, name: &str) -> Vec<String> {
        self.first(name)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Answers one of the requests above; `None` for anything else. `gmail` is the fake Gmail's
/// messages (id → labels); `parts` the path's decoded segments; `query` the raw query string.
pub fn route(
    st: &mut GoogleState,
    gmail: &BTreeMap<String, Vec<String>>,
    method: &str,
    parts: &[&str],
    query: &str,
    body: &Value,
) -> Option<Answer> {
    let q = Query::parse(query);
    match (method, parts) {
        ("GET", ["gmail", "v1", "users", "me", "messages", id]) => match q.first("format") {
            Some("metadata") => Some(gmail_metadata(gmail, id, &q.all("metadataHeaders"))),
            Some("raw") => Some(gmail_raw(gmail, id)),
            _ => None,
        },
        ("POST", ["gmail", "v1", "users", "me", "messages", "send"]) => Some(gmail_send(st, gmail, body)),
        (_, ["drive", "v3", rest @ ..]) => Some(drive(st, method, rest, &q, body)),
        (_, ["docs", "v1", rest @ ..]) => Some(docs(st, method, rest, body)),
        (_, ["tasks", "v1", rest @ ..]) => Some(tasks(st, method, rest, &q, body)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Gmail
// ---------------------------------------------------------------------------------------------

fn thread_of(id: &str) -> String {
    format!("thread-{id}")
}

fn synthetic_headers(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("From", format!("sender-{id}@example.com")),
        ("To", "me@example.com".to_owned()),
        ("Subject", format!("Subject {id}")),
        ("Date", "Mon, 2 Mar 2026 09:00:00 +0000".to_owned()),
        ("Message-ID", format!("<{id}@mail.example>")),
    ]
}

fn gmail_metadata(gmail: &BTreeMap<String, Vec<String>>, id: &str, wanted: &[&str]) -> Answer {
    let Some(labels) = gmail.get(id) else { return error(404, "Requested entity was not found.") };
    let headers: Vec<Value> = synthetic_headers(id)
        .into_iter()
        .filter(|(name, _)| wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(name)))
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    (
        200,
        json!({"id": id, "threadId": thread_of(id), "labelIds": labels, "snippet": format!("Body of message {id}"),
               "payload": {"mimeType": "text/plain", "headers": headers}}),
    )
}

/// The synthesized original of message `id`, as Gmail's `raw` holds it.
pub fn original_message(id: &str) -> String {
    let mut raw: String = synthetic_headers(id).into_iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    raw.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    raw.push_str(&format!("Body of message {id}\r\n"));
    raw
}

fn gmail_raw(gmail: &BTreeMap<String, Vec<String>>, id: &str) -> Answer {
    let Some(labels) = gmail.get(id) else { return error(404, "Requested entity was not found.") };
    // Gmail's base64url keeps its padding.
    let raw = base64::engine::general_purpose::URL_SAFE.encode(original_message(id).as_bytes());
    (200, json!({"id": id, "threadId": thread_of(id), "labelIds": labels, "raw": raw}))
}

fn decode_base64url(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace() && *c != '=').collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(clean.as_bytes()).ok()
}

/// What a test wants to see of a sent message.
fn describe_sent(parsed: &mailparse::ParsedMail<'_>) -> Map<String, Value> {
    use mailparse::MailHeaderMap;
    let mut headers = Map::new();
    for h in &parsed.headers {
        headers.entry(h.get_key()).or_insert_with(|| Value::String(h.get_value()));
    }
    let mut out = Map::new();
    out.insert("to".into(), json!(parsed.headers.get_first_value("To")));
    out.insert("subject".into(), json!(parsed.headers.get_first_value("Subject")));
    out.insert("headers".into(), Value::Object(headers));
    let mut text = None;
    let mut html = None;
    let mut attachments = Vec::new();
    let mut forwarded = Value::Null;
    fn walk(
        part: &mailparse::ParsedMail<'_>,
        text: &mut Option<String>,
        html: &mut Option<String>,
        attachments: &mut Vec<String>,
        forwarded: &mut Value,
    ) {
        if !part.subparts.is_empty() {
            for sub in &part.subparts {
                walk(sub, text, html, attachments, forwarded);
            }
            return;
        }
        let mime = part.ctype.mimetype.as_str();
        match mime {
            "text/plain" if text.is_none() => *text = part.get_body().ok().map(|b| b.replace("\r\n", "\n")),
            "text/html" if html.is_none() => *html = part.get_body().ok().map(|b| b.replace("\r\n", "\n")),
            "message/rfc822" => {
                attachments.push(mime.to_owned());
                if let Ok(inner) = part.get_body_raw() {
                    if let Ok(original) = mailparse::parse_mail(&inner) {
                        use mailparse::MailHeaderMap;
                        *forwarded = json!({"from": original.headers.get_first_value("From"),
                                            "subject": original.headers.get_first_value("Subject"),
                                            "message_id": original.headers.get_first_value("Message-ID")});
                    }
                }
            }
            other => attachments.push(other.to_owned()),
        }
    }
    walk(parsed, &mut text, &mut html, &mut attachments, &mut forwarded);
    out.insert("text".into(), json!(text));
    out.insert("html".into(), json!(html));
    out.insert("attachments".into(), json!(attachments));
    out.insert("forwarded".into(), forwarded);
    out
}

fn gmail_send(st: &mut GoogleState, gmail: &BTreeMap<String, Vec<String>>, body: &Value) -> Answer {
    let Some(bytes) = body.get("raw").and_then(Value::as_str).and_then(decode_base64url) else {
        return error(400, "Invalid value for ByteString");
    };
    let thread = body.get("threadId").and_then(Value::as_str);
    if let Some(t) = thread {
        if !t.strip_prefix("thread-").is_some_and(|m| gmail.contains_key(m)) {
            return error(404, "Requested entity was not found.");
        }
    }
    let Ok(parsed) = mailparse::parse_mail(&bytes) else { return error(400, "Invalid message") };
    let mut sent = describe_sent(&parsed);
    if sent.get("to").and_then(Value::as_str).is_none_or(|t| t.trim().is_empty()) {
        return error(400, "Invalid To header");
    }
    let id = st.new_id("sent");
    let thread_id = thread.map_or_else(|| format!("thread-{id}"), str::to_owned);
    sent.insert("id".into(), json!(id));
    sent.insert("threadId".into(), json!(thread_id));
    sent.insert("raw".into(), json!(String::from_utf8_lossy(&bytes)));
    st.sent.push(Value::Object(sent));
    (200, json!({"id": id, "threadId": thread_id, "labelIds": ["SENT"]}))
}

// ---------------------------------------------------------------------------------------------
// Drive
// ---------------------------------------------------------------------------------------------

/// The text inside the single quotes at the start of `s` (with `\'` and `\\` escapes), and
/// what follows the closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let rest = s.trim_start().strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '\'' => return Some((out, &rest[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// `appProperties has { key='K' and value='V' }`, optionally followed by
/// `and trashed=false|true`: (K, V, trashed).
pub fn parse_app_properties_query(q: &str) -> Option<(String, String, Option<bool>)> {
    let rest = q.trim().strip_prefix("appProperties")?.trim_start().strip_prefix("has")?.trim_start();
    let rest = rest.strip_prefix('{')?.trim_start().strip_prefix("key")?.trim_start().strip_prefix('=')?;
    let (key, rest) = quoted(rest)?;
    let rest = rest.trim_start().strip_prefix("and")?.trim_start().strip_prefix("value")?.trim_start();
    let (value, rest) = quoted(rest.strip_prefix('=')?)?;
    let rest = rest.trim_start().strip_prefix('}')?.trim();
    if rest.is_empty() {
        return Some((key, value, None));
    }
    let condition: String = rest.strip_prefix("and")?.chars().filter(|c| !c.is_whitespace()).collect();
    match condition.as_str() {
        "trashed=false" => Some((key, value, Some(false))),
        "trashed=true" => Some((key, value, Some(true))),
        _ => None,
    }
}

fn drive(st: &mut GoogleState, method: &str, rest: &[&str], q: &Query, body: &Value) -> Answer {
    match (method, rest) {
        ("GET", ["files"]) => {
            let filter = match q.first("q") {
                None => None,
                Some(text) => match parse_app_properties_query(text) {
                    Some(f) => Some(f),
                    None => return error(400, "Invalid Value"),
                },
            };
            let files: Vec<Value> = st
                .files
                .iter()
                .filter(|(_, f)| match &filter {
                    None => !f.trashed,
                    Some((k, v, trashed)) => {
                        f.app_properties.get(k) == Some(v) && trashed.is_none_or(|t| f.trashed == t)
                    }
                })
                .map(|(id, f)| json!({"kind": "drive#file", "id": id, "name": f.name, "mimeType": f.mime_type}))
                .collect();
            (200, json!({"kind": "drive#fileList", "incompleteSearch": false, "files": files}))
        }
        // files.create, metadata only (a Docs document is created this way with its tag).
        ("POST", ["files"]) => {
            let name = body.get("name").and_then(Value::as_str).unwrap_or("Untitled").to_owned();
            let mime_type =
                body.get("mimeType").and_then(Value::as_str).unwrap_or("application/octet-stream").to_owned();
            let mut app_properties = BTreeMap::new();
            for (k, v) in body.get("appProperties").and_then(Value::as_object).into_iter().flatten() {
                let Some(v) = v.as_str() else { return error(400, "Invalid value for: appProperties") };
                app_properties.insert(k.clone(), v.to_owned());
            }
            let id = st.new_id(if mime_type == DOCUMENT_MIME { "doc" } else { "file" });
            if mime_type == DOCUMENT_MIME {
                st.docs.insert(id.clone(), String::new());
            }
            let file = DriveFile { name, parents: vec!["root".to_owned()], trashed: false, app_properties, mime_type };
            let answer = file.to_json(&id);
            st.files.insert(id, file);
            (200, answer)
        }
        ("GET", ["files", id]) => match st.files.get(*id) {
            Some(f) => (200, f.to_json(id)),
            None => error(404, &format!("File not found: {id}.")),
        },
        ("PATCH", ["files", id]) => {
            let Some(file) = st.files.get_mut(*id) else { return error(404, &format!("File not found: {id}.")) };
            let add = q.list("addParents");
            let remove = q.list("removeParents");
            let mut parents: Vec<String> = file.parents.iter().filter(|p| !remove.contains(p)).cloned().collect();
            for p in add {
                if !parents.contains(&p) {
                    parents.push(p);
                }
            }
            if parents.len() > 1 && parents.len() > file.parents.len() {
                return error(403, "Increasing the number of parents is not allowed.");
            }
            let mut changed = file.clone();
            changed.parents = parents;
            if let Some(trashed) = body.get("trashed") {
                match trashed.as_bool() {
                    Some(t) => changed.trashed = t,
                    None => return error(400, "Invalid value for: trashed"),
                }
            }
            if let Some(name) = body.get("name").and_then(Value::as_str) {
                changed.name = name.to_owned();
            }
            if let Some(props) = body.get("appProperties") {
                let Some(props) = props.as_object() else { return error(400, "Invalid value for: appProperties") };
                for (k, v) in props {
                    match v {
                        Value::Null => {
                            changed.app_properties.remove(k);
                        }
                        Value::String(s) => {
                            changed.app_properties.insert(k.clone(), s.clone());
                        }
                        _ => return error(400, "Invalid value for: appProperties"),
                    }
                }
            }
            *file = changed;
            (200, file.to_json(id))
        }
        _ => error(404, "Not Found"),
    }
}

// ---------------------------------------------------------------------------------------------
// Docs
// ---------------------------------------------------------------------------------------------

fn document_json(id: &str, title: &str, text: &str) -> Value {
    let content = format!("{text}\n");
    let end = 1 + content.encode_utf16().count();
    json!({"documentId": id, "title": title, "revisionId": format!("rev-{}", text.len()),
    "body": {"content": [
        {"endIndex": 1, "sectionBreak": {"sectionStyle": {}}},
        {"startIndex": 1, "endIndex": end,
         "paragraph": {"elements": [{"startIndex": 1, "endIndex": end, "textRun": {"content": content}}]}}
    ]}})
}

fn docs(st: &mut GoogleState, method: &str, rest: &[&str], body: &Value) -> Answer {
    match (method, rest) {
        ("POST", ["documents"]) => {
            let title = body.get("title").and_then(Value::as_str).unwrap_or("Untitled document").to_owned();
            let id = st.new_id("doc");
            st.docs.insert(id.clone(), String::new());
            st.files.insert(
                id.clone(),
                DriveFile {
                    name: title.clone(),
                    parents: vec!["root".to_owned()],
                    mime_type: DOCUMENT_MIME.to_owned(),
                    ..DriveFile::default()
                },
            );
            (200, document_json(&id, &title, ""))
        }
        ("GET", ["documents", id]) => match (st.docs.get(*id), st.files.get(*id)) {
            (Some(text), Some(file)) => (200, document_json(id, &file.name, text)),
            (Some(text), None) => (200, document_json(id, "", text)),
            _ => error(404, "Requested entity was not found."),
        },
        ("POST", ["documents", call]) => {
            let Some(id) = call.strip_suffix(":batchUpdate") else { return error(404, "Not Found") };
            let Some(text) = st.docs.get(id) else { return error(404, "Requested entity was not found.") };
            let mut text = text.clone();
            let Some(requests) = body.get("requests").and_then(Value::as_array) else {
                return error(400, "Invalid JSON payload: requests is required");
            };
            let mut replies = Vec::new();
            for (i, request) in requests.iter().enumerate() {
                let Some(insert) = request.get("insertText") else {
                    return error(400, &format!("Invalid requests[{i}]: only insertText is faked"));
                };
                let (Some(index), Some(new)) = (
                    insert.pointer("/location/index").and_then(Value::as_u64),
                    insert.get("text").and_then(Value::as_str),
                ) else {
                    return error(400, &format!("Invalid requests[{i}].insertText"));
                };
                // Indexes count from 1 (0 is the section break); characters stand for UTF-16 units.
                let at = usize::try_from(index).unwrap_or(usize::MAX);
                let len = text.chars().count();
                if at == 0 || at > len + 1 {
                    return error(
                        400,
                        &format!(
                            "Invalid requests[{i}].insertText: Index {index} must be less than the end index of the referenced segment, {}.",
                            len + 2
                        ),
                    );
                }
                let byte = text.char_indices().nth(at - 1).map_or(text.len(), |(b, _)| b);
                text.insert_str(byte, new);
                replies.push(json!({}));
            }
            st.docs.insert(id.to_owned(), text.clone());
            (
                200,
                json!({"documentId": id, "replies": replies, "writeControl": {"requiredRevisionId": format!("rev-{}", text.len())}}),
            )
        }
        _ => error(404, "Not Found"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

fn tasks(st: &mut GoogleState, method: &str, rest: &[&str], q: &Query, body: &Value) -> Answer {
    match (method, rest) {
        ("GET", ["lists", list, "tasks"]) => {
            let max = q.first("maxResults").and_then(|m| m.parse::<usize>().ok()).unwrap_or(20).clamp(1, 100);
            let start = q.first("pageToken").and_then(|t| t.parse::<usize>().ok()).unwrap_or(0);
            let all: Vec<&Value> = st.tasks.iter().filter(|((l, _), _)| l == list).map(|(_, t)| t).collect();
            let items: Vec<Value> = all.iter().skip(start).take(max).map(|t| (*t).clone()).collect();
            let mut answer = json!({"kind": "tasks#tasks", "etag": format!("\"{}\"", all.len()), "items": items});
            if start + max < all.len() {
                answer["nextPageToken"] = json!((start + max).to_string());
            }
            (200, answer)
        }
        ("POST", ["lists", list, "tasks"]) => {
            let title = match body.get("title") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return error(400, "Invalid value for: title"),
            };
            let notes = body.get("notes").and_then(Value::as_str);
            if notes.is_some_and(|n| n.chars().count() > 8192) {
                return error(400, "Invalid value for: notes is too long");
            }
            let due = match body.get("due").and_then(Value::as_str) {
                None => None,
                // Google keeps only the date.
                Some(d) => match chrono::DateTime::parse_from_rfc3339(d) {
                    Ok(t) => Some(format!("{}T00:00:00.000Z", t.format("%Y-%m-%d"))),
                    Err(_) => return error(400, &format!("Invalid value for: {d} is not a valid RFC 3339 date-time")),
                },
            };
            let id = st.new_id("task");
            let mut task = json!({
                "kind": "tasks#task", "id": id, "title": title, "status": "needsAction",
                "updated": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "selfLink": format!("https://www.googleapis.com/tasks/v1/lists/{list}/tasks/{id}"),
                "webViewLink": format!("https://tasks.google.com/task/{id}"),
            });
            if let Some(n) = notes {
                task["notes"] = json!(n);
            }
            if let Some(d) = due {
                task["due"] = json!(d);
            }
            st.tasks.insert(((*list).to_owned(), id), task.clone());
            (200, task)
        }
        ("DELETE", ["lists", list, "tasks", id]) => match st.tasks.remove(&((*list).to_owned(), (*id).to_owned())) {
            Some(_) => (204, Value::Null),
            None => error(404, "Task not found."),
        },
        _ => error(404, "Not Found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gmail() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([("m1".to_owned(), vec!["INBOX".to_owned()])])
    }

    fn call(st: &mut GoogleState, method: &str, path: &str, query: &str, body: Value) -> Option<Answer> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        route(st, &gmail(), method, &parts, query, &body)
    }

    #[test]
    fn other_paths_are_left_to_the_caller() {
        let mut st = GoogleState::default();
        assert!(call(&mut st, "GET", "/gmail/v1/users/me/messages/m1", "format=minimal", Value::Null).is_none());
        assert!(call(&mut st, "POST", "/gmail/v1/users/me/messages/m1/modify", "", Value::Null).is_none());
        assert!(call(&mut st, "GET", "/calendar/v3/calendars/primary/events", "", Value::Null).is_none());
    }

    #[test]
    fn gmail_metadata_and_raw_describe_existing_messages() {
        let mut st = GoogleState::default();
        let (status, m) = call(
            &mut st,
            "GET",
            "/gmail/v1/users/me/messages/m1",
            "format=metadata&metadataHeaders=From&metadataHeaders=Message-ID",
            Value::Null,
        )
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(m["threadId"], "thread-m1");
        assert_eq!(
            m["payload"]["headers"],
            json!([{"name": "From", "value": "sender-m1@example.com"}, {"name": "Message-ID", "value": "<m1@mail.example>"}])
        );
        let (status, raw) = call(&mut st, "GET", "/gmail/v1/users/me/messages/m1", "format=raw", Value::Null).unwrap();
        assert_eq!(status, 200);
        let decoded = decode_base64url(raw["raw"].as_str().unwrap()).unwrap();
        assert!(String::from_utf8(decoded).unwrap().contains("Subject: Subject m1\r\n"));
        assert_eq!(call(&mut st, "GET", "/gmail/v1/users/me/messages/nope", "format=raw", Value::Null).unwrap().0, 404);
    }

    #[test]
    fn sent_messages_are_kept_decoded() {
        let mut st = GoogleState::default();
        let raw = "To: a@example.com\r\nSubject: =?UTF-8?B?UmU6IMOp?=\r\nIn-Reply-To: <m1@mail.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nSGkKdGhlcmU=\r\n";
        let body =
            json!({"raw": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw), "threadId": "thread-m1"});
        let (status, answer) = call(&mut st, "POST", "/gmail/v1/users/me/messages/send", "", body).unwrap();
        assert_eq!(status, 200);
        assert_eq!(answer["threadId"], "thread-m1");
        assert_eq!(st.sent[0]["subject"], "Re: é");
        assert_eq!(st.sent[0]["headers"]["In-Reply-To"], "<m1@mail.example>");
        assert_eq!(st.sent[0]["text"], "Hi\nthere");
        let bad_thread =
            json!({"raw": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw), "threadId": "thread-x"});
        assert_eq!(call(&mut st, "POST", "/gmail/v1/users/me/messages/send", "", bad_thread).unwrap().0, 404);
        let no_to = json!({"raw": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("Subject: x\r\n\r\nhi\r\n")});
        assert_eq!(call(&mut st, "POST", "/gmail/v1/users/me/messages/send", "", no_to).unwrap().0, 400);
    }

    #[test]
    fn forwarded_originals_are_recognised() {
        let mut st = GoogleState::default();
        let raw = format!(
            "To: b@example.com\r\nSubject: Fwd: Subject m1\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
             --XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nFYI\r\n\
             --XX\r\nContent-Type: message/rfc822\r\n\r\n{}\r\n--XX--\r\n",
            original_message("m1")
        );
        let body = json!({"raw": base64::engine::general_purpose::URL_SAFE.encode(raw)});
        assert_eq!(call(&mut st, "POST", "/gmail/v1/users/me/messages/send", "", body).unwrap().0, 200);
        assert_eq!(st.sent[0]["forwarded"]["subject"], "Subject m1");
        assert_eq!(st.sent[0]["attachments"], json!(["message/rfc822"]));
        assert_eq!(st.sent[0]["text"].as_str().map(str::trim), Some("FYI"));
    }

    #[test]
    fn drive_moves_files_and_finds_them_by_app_property() {
        let mut st = GoogleState::default();
        st.seed_file("f1", "report.pdf", &["a"]);
        let (status, f) =
            call(&mut st, "PATCH", "/drive/v3/files/f1", "addParents=b&removeParents=a&fields=id%2Cparents", json!({}))
                .unwrap();
        assert_eq!((status, f["parents"].clone()), (200, json!(["b"])));
        assert_eq!(call(&mut st, "PATCH", "/drive/v3/files/f1", "addParents=c", json!({})).unwrap().0, 403);
        assert_eq!(call(&mut st, "GET", "/drive/v3/files/nope", "", Value::Null).unwrap().0, 404);
        call(&mut st, "PATCH", "/drive/v3/files/f1", "", json!({"appProperties": {"actiongateKey": "k1"}})).unwrap();
        let q = "q=appProperties+has+%7B+key%3D%27actiongateKey%27+and+value%3D%27k1%27+%7D+and+trashed%3Dfalse&fields=files(id)";
        let (_, list) = call(&mut st, "GET", "/drive/v3/files", q, Value::Null).unwrap();
        assert_eq!(list["files"][0]["id"], "f1");
        call(&mut st, "PATCH", "/drive/v3/files/f1", "", json!({"trashed": true})).unwrap();
        let (_, list) = call(&mut st, "GET", "/drive/v3/files", q, Value::Null).unwrap();
        assert_eq!(list["files"], json!([]));
        assert_eq!(call(&mut st, "GET", "/drive/v3/files", "q=name+%3D+%27x%27", Value::Null).unwrap().0, 400);
    }

    #[test]
    fn app_property_queries_parse() {
        assert_eq!(
            parse_app_properties_query("appProperties has { key='actiongateKey' and value='a\\'b' } and trashed=false"),
            Some(("actiongateKey".to_owned(), "a'b".to_owned(), Some(false)))
        );
        assert_eq!(
            parse_app_properties_query("appProperties has {key='k' and value='v'}"),
            Some(("k".to_owned(), "v".to_owned(), None))
        );
        assert_eq!(parse_app_properties_query("name = 'x'"), None);
        assert_eq!(parse_app_properties_query("appProperties has { key='k' and value='v' } or starred"), None);
    }

    #[test]
    fn documents_are_created_filled_and_read() {
        let mut st = GoogleState::default();
        let (_, doc) = call(&mut st, "POST", "/docs/v1/documents", "", json!({"title": "Plan"})).unwrap();
        let id = doc["documentId"].as_str().unwrap().to_owned();
        assert_eq!(st.files[&id].mime_type, DOCUMENT_MIME);
        let insert = json!({"requests": [{"insertText": {"location": {"index": 1}, "text": "Hello"}}]});
        let path = format!("/docs/v1/documents/{id}:batchUpdate");
        assert_eq!(call(&mut st, "POST", &path, "", insert).unwrap().0, 200);
        assert_eq!(st.docs[&id], "Hello");
        let (_, read) = call(&mut st, "GET", &format!("/docs/v1/documents/{id}"), "", Value::Null).unwrap();
        assert_eq!(read["body"]["content"][1]["paragraph"]["elements"][0]["textRun"]["content"], "Hello\n");
        let far = json!({"requests": [{"insertText": {"location": {"index": 99}, "text": "x"}}]});
        assert_eq!(call(&mut st, "POST", &path, "", far).unwrap().0, 400);
        assert_eq!(
            call(&mut st, "POST", "/docs/v1/documents/nope:batchUpdate", "", json!({"requests": []})).unwrap().0,
            404
        );
    }

    #[test]
    fn tasks_are_created_listed_in_pages_and_deleted() {
        let mut st = GoogleState::default();
        for i in 0..3 {
            let (status, _) = call(
                &mut st,
                "POST",
                "/tasks/v1/lists/@default/tasks",
                "",
                json!({"title": format!("t{i}"), "notes": "n", "due": "2026-03-02T09:30:00+02:00"}),
            )
            .unwrap();
            assert_eq!(status, 200);
        }
        let (_, page) =
            call(&mut st, "GET", "/tasks/v1/lists/@default/tasks", "maxResults=2&showCompleted=true", Value::Null)
                .unwrap();
        assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(page["items"][0]["due"], "2026-03-02T00:00:00.000Z");
        let token = page["nextPageToken"].as_str().unwrap().to_owned();
        let (_, rest) = call(
            &mut st,
            "GET",
            "/tasks/v1/lists/@default/tasks",
            &format!("maxResults=2&pageToken={token}"),
            Value::Null,
        )
        .unwrap();
        assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
        assert!(rest.get("nextPageToken").is_none());
        let id = page["items"][0]["id"].as_str().unwrap().to_owned();
        let path = format!("/tasks/v1/lists/@default/tasks/{id}");
        assert_eq!(call(&mut st, "DELETE", &path, "", Value::Null).unwrap().0, 204);
        assert_eq!(call(&mut st, "DELETE", &path, "", Value::Null).unwrap().0, 404);
        assert_eq!(
            call(&mut st, "POST", "/tasks/v1/lists/@default/tasks", "", json!({"title": "x", "due": "soon"}))
                .unwrap()
                .0,
            400
        );
    }
}
