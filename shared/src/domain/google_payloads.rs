//! The payloads of the Google Workspace action types (`gmail.reply`, `gmail.forward`,
//! `drive.move_file`, `docs.create_document`, `tasks.create`): their rules (every error names
//! its field as a JSON path, unknown fields are refused), their JSON Schemas (draft 2020-12,
//! agreeing with the rules; a test holds them together) and their preview sentences.
//!
//! Pure: it uses nothing outside `crate::domain`, so it can move into the domain as it is
//! (the domain's validators and catalogue may only import from the domain).

use crate::domain::field_error::FieldError;
use crate::domain::EmailAddress;
use serde_json::{json, Map, Value};

/// The action types described here.
pub const GOOGLE_ACTION_TYPES: [&str; 5] =
    ["gmail.reply", "gmail.forward", "drive.move_file", "docs.create_document", "tasks.create"];

/// The longest body text (in characters) of a reply, a forward's note or a new document.
pub const MAX_TEXT_CHARS: usize = 100 * 1024;
/// Addresses a reply may copy.
pub const MAX_CC: usize = 50;
/// Recipients of one forward.
pub const MAX_FORWARD_RECIPIENTS: usize = 20;
/// A document title, in characters.
pub const MAX_DOC_TITLE_CHARS: usize = 256;
/// A task title, in characters.
pub const MAX_TASK_TITLE_CHARS: usize = 1024;
/// A task's notes, in characters: Google keeps 8192, less room for the dedupe marker line the
/// handler appends.
pub const MAX_TASK_NOTES_CHARS: usize = 8000;
/// The task list used when a payload names none.
pub const DEFAULT_TASKLIST: &str = "@default";
/// How much of a title a preview shows, in characters.
const PREVIEW_TITLE_CHARS: usize = 80;

/// Validates the payload of one of [`GOOGLE_ACTION_TYPES`] sitting at `path` (`payload`,
/// `steps[2].payload`); `None` for any other type.
pub fn validate(action_type: &str, payload: &Value, path: &str) -> Option<Result<(), FieldError>> {
    let known: &[&str] = match action_type {
        "gmail.reply" => &["message_id", "text", "html", "cc"],
        "gmail.forward" => &["message_id", "to", "text"],
        "drive.move_file" => &["file_id", "to_folder_id"],
        "docs.create_document" => &["title", "text"],
        "tasks.create" => &["title", "notes", "due", "tasklist"],
        _ => return None,
    };
    Some(check(action_type, payload, path, known))
}

fn check(action_type: &str, payload: &Value, path: &str, known: &[&str]) -> Result<(), FieldError> {
    let p = Fields::at(payload, path)?;
    match action_type {
        "gmail.reply" => {
            p.message_id("message_id")?;
            p.text("text", true)?;
            p.text("html", false)?;
            if p.get("cc").is_some() {
                p.email_list("cc", 0, MAX_CC)?;
            }
        }
        "gmail.forward" => {
            p.message_id("message_id")?;
            p.email_list("to", 1, MAX_FORWARD_RECIPIENTS)?;
            p.text("text", false)?;
        }
        "drive.move_file" => {
            p.drive_id("file_id")?;
            p.drive_id("to_folder_id")?;
        }
        "docs.create_document" => {
            p.title("title", MAX_DOC_TITLE_CHARS)?;
            p.text("text", false)?;
        }
        "tasks.create" => {
            p.title("title", MAX_TASK_TITLE_CHARS)?;
            if let Some(notes) = p.opt_str("notes")? {
                if notes.chars().count() > MAX_TASK_NOTES_CHARS {
                    return Err(p.err("notes", &format!("is too long ({MAX_TASK_NOTES_CHARS} characters at most)")));
                }
            }
            if let Some(due) = p.opt_str("due")? {
                if chrono::DateTime::parse_from_rfc3339(due).is_err() {
                    return Err(p.err("due", "must be an RFC 3339 time such as 2026-01-31T09:00:00Z"));
                }
            }
            if let Some(list) = p.opt_str("tasklist")? {
                if list != DEFAULT_TASKLIST && !is_plain_id(list) {
                    return Err(p.err("tasklist", "must be @default or a task list id (letters, digits, - and _)"));
                }
            }
        }
        _ => {}
    }
    p.finish(known)
}

/// Letters, digits, `-` and `_`, 1 to 256 of them: Gmail message ids, Drive file ids, task
/// list ids.
fn is_plain_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A JSON object read field by field (`null` counts as absent, as in `validation.rs`).
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Fields<'a> {
    fn at(v: &'a Value, path: &'a str) -> Result<Self, FieldError> {
        let map = v.as_object().ok_or_else(|| FieldError::new(path, "must be an object"))?;
        Ok(Self { map, path })
    }

    fn field(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn err(&self, name: &str, message: &str) -> FieldError {
        FieldError::new(self.field(name), message)
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn opt_str(&self, name: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.err(name, "must be a string")),
        }
    }

    fn req_str(&self, name: &str) -> Result<&'a str, FieldError> {
        self.opt_str(name)?.ok_or_else(|| self.err(name, "is required"))
    }

    fn message_id(&self, name: &str) -> Result<(), FieldError> {
        if is_plain_id(self.req_str(name)?) {
            Ok(())
        } else {
            Err(self.err(name, "must be a Gmail message id (letters, digits, - and _)"))
        }
    }

    fn drive_id(&self, name: &str) -> Result<(), FieldError> {
        if is_plain_id(self.req_str(name)?) {
            Ok(())
        } else {
            Err(self.err(name, "must be a Drive id (letters, digits, - and _)"))
        }
    }

    /// A body text of at most [`MAX_TEXT_CHARS`]; `required` ones must not be empty.
    fn text(&self, name: &str, required: bool) -> Result<(), FieldError> {
        let text = if required { Some(self.req_str(name)?) } else { self.opt_str(name)? };
        match text {
            Some("") if required => Err(self.err(name, "must not be empty")),
            Some(s) if s.chars().count() > MAX_TEXT_CHARS => {
                Err(self.err(name, &format!("is too long ({MAX_TEXT_CHARS} characters at most)")))
            }
            _ => Ok(()),
        }
    }

    /// One line of 1 to `max` characters, not blank, without control characters.
    fn title(&self, name: &str, max: usize) -> Result<(), FieldError> {
        let s = self.req_str(name)?;
        if s.trim().is_empty() || s.chars().count() > max || s.chars().any(|c| c.is_ascii_control()) {
            return Err(self.err(name, &format!("must be 1 to {max} characters on one line, not blank")));
        }
        Ok(())
    }

    fn email_list(&self, name: &str, min: usize, max: usize) -> Result<(), FieldError> {
        let items = self
            .get(name)
            .ok_or_else(|| self.err(name, "is required"))?
            .as_array()
            .ok_or_else(|| self.err(name, "must be an array of email addresses"))?;
        if items.len() < min || items.len() > max {
            return Err(self.err(name, &format!("must have between {min} and {max} addresses")));
        }
        for (i, v) in items.iter().enumerate() {
            if v.as_str().filter(|s| s.trim() == *s).and_then(EmailAddress::parse).is_none() {
                return Err(self.err(&format!("{name}[{i}]"), "must be an email address"));
            }
        }
        Ok(())
    }

    fn finish(&self, known: &[&str]) -> Result<(), FieldError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(unknown) => Err(self.err(unknown, "is not a known field")),
        }
    }
}

/// Whether every `payload.to` address of a `gmail.forward` is at a domain `allowed` names
/// (case-insensitively; an entry `example.com` allows that domain and its subdomains; `@`,
/// `.` and `*.` before an entry are ignored). An empty list refuses forwarding entirely.
/// The error names the field (`payload.to[2]`) and says why.
pub fn forward_domains_allowed(payload: &Value, allowed: &[String]) -> Result<(), (String, String)> {
    let entries: Vec<String> = allowed
        .iter()
        .map(|e| {
            let e = e.trim().to_ascii_lowercase();
            let e = e
                .strip_prefix("*.")
                .or_else(|| e.strip_prefix('@'))
                .or_else(|| e.strip_prefix('.'))
                .unwrap_or(e.as_str());
            e.trim_end_matches('.').to_owned()
        })
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err((
            "payload.to".to_owned(),
            "forwarding is not allowed: the policy names no recipient domains for gmail.forward".to_owned(),
        ));
    }
    let to = payload
        .get("to")
        .and_then(Value::as_array)
        .ok_or_else(|| ("payload.to".to_owned(), "must be an array of email addresses".to_owned()))?;
    for (i, v) in to.iter().enumerate() {
        let field = format!("payload.to[{i}]");
        let domain = v
            .as_str()
            .and_then(|s| s.trim().rsplit_once('@'))
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| (field.clone(), "must be an email address".to_owned()))?;
        let ok = entries.iter().any(|e| domain == *e || domain.ends_with(&format!(".{e}")));
        if !ok {
            return Err((
                field,
                format!("{domain} is not a domain messages may be forwarded to (allowed: {})", entries.join(", ")),
            ));
        }
    }
    Ok(())
}

fn schema_object(required: &[&str], properties: Value, description: &str) -> Value {
    let properties = crate::domain::schema_parts::optional_nullable(required, properties);
    json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
           "required": required, "properties": properties, "additionalProperties": false,
           "description": description})
}

fn plain_id(description: &str) -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,256}$", "description": description})
}

use crate::domain::schema_parts::emails;

fn text_schema(min: usize) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": MAX_TEXT_CHARS,
           "description": format!("at most {MAX_TEXT_CHARS} characters")})
}

fn title_schema(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": "^[^\\x00-\\x1f\\x7f]*$",
           "allOf": [{"pattern": "\\S"}], "description": "one line, not blank"})
}

/// The payload schema of one of [`GOOGLE_ACTION_TYPES`].
pub fn schema(action_type: &str) -> Option<Value> {
    Some(match action_type {
        "gmail.reply" => schema_object(
            &["message_id", "text"],
            json!({"message_id": plain_id("the Gmail message replied to"),
                   "text": text_schema(1), "html": text_schema(0), "cc": emails(0, MAX_CC)}),
            "a reply to a Gmail message, sent to its Reply-To (else its From) in the same thread; cannot be recalled",
        ),
        "gmail.forward" => schema_object(
            &["message_id", "to"],
            json!({"message_id": plain_id("the Gmail message forwarded"),
                   "to": emails(1, MAX_FORWARD_RECIPIENTS), "text": text_schema(0)}),
            "a Gmail message forwarded (attached) with an optional note; recipients must be at domains the policy allows; cannot be recalled",
        ),
        "drive.move_file" => schema_object(
            &["file_id", "to_folder_id"],
            json!({"file_id": plain_id("the Drive file moved"),
                   "to_folder_id": plain_id("the Drive folder it moves to")}),
            "a Drive file moved into one folder (out of its current ones)",
        ),
        "docs.create_document" => schema_object(
            &["title"],
            json!({"title": title_schema(MAX_DOC_TITLE_CHARS), "text": text_schema(0)}),
            "a new Google Doc, with optional text",
        ),
        "tasks.create" => schema_object(
            &["title"],
            json!({"title": title_schema(MAX_TASK_TITLE_CHARS),
                   "notes": {"type": "string", "maxLength": MAX_TASK_NOTES_CHARS},
                   "due": {"type": "string", "format": "date-time", "description": "RFC 3339; Google keeps the date"},
                   "tasklist": {"type": "string", "pattern": "^(@default|[A-Za-z0-9_-]{1,256})$",
                                "description": "a task list id; @default when absent"}}),
            "a new Google Task",
        ),
        _ => return None,
    })
}

/// At most `max` characters of `s`, with `…` when cut.
fn truncated(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// What an action of one of [`GOOGLE_ACTION_TYPES`] does, as a sentence (lowercase, like the
/// catalogue's other sentences).
pub fn describe(action_type: &str, payload: &Value) -> Option<String> {
    let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    let list = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let title = || truncated(&s("title"), PREVIEW_TITLE_CHARS);
    Some(match action_type {
        "gmail.reply" => {
            let cc = list("cc");
            let cc = if cc.is_empty() { String::new() } else { format!(", copying {cc}") };
            format!("reply to Gmail message {} (to the sender{cc})", s("message_id"))
        }
        "gmail.forward" => {
            let note = if payload.get("text").and_then(Value::as_str).is_some_and(|t| !t.is_empty()) {
                " with a note"
            } else {
                ""
            };
            format!("forward Gmail message {} to {}{note}", s("message_id"), list("to"))
        }
        "drive.move_file" => format!("move Drive file {} to folder {}", s("file_id"), s("to_folder_id")),
        "docs.create_document" => {
            let with_text = if payload.get("text").and_then(Value::as_str).is_some_and(|t| !t.is_empty()) {
                " with text"
            } else {
                ""
            };
            format!("create Google Doc \"{}\"{with_text}", title())
        }
        "tasks.create" => {
            let mut line = format!("create task \"{}\"", title());
            if let Some(due) = payload.get("due").and_then(Value::as_str) {
                let date = chrono::DateTime::parse_from_rfc3339(due)
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_else(|_| truncated(due, 40));
                line.push_str(&format!(" due {date}"));
            }
            if let Some(list) = payload.get("tasklist").and_then(Value::as_str).filter(|l| *l != DEFAULT_TASKLIST) {
                line.push_str(&format!(" in list {list}"));
            }
            line
        }
        _ => return None,
    })
}

/// Which labels an action type adds and removes.
#[derive(Debug, Clone, Copy)]
pub struct LabelChange {
    pub add: &'static [&'static str],
    pub remove: &'static [&'static str],
    /// `gmail.label`: the payload's `label_ids` are added too.
    pub payload_labels: bool,
}

pub const LABEL_CHANGES: [(&str, LabelChange); 5] = [
    ("gmail.flag", LabelChange { add: &["STARRED"], remove: &[], payload_labels: false }),
    ("gmail.archive", LabelChange { add: &[], remove: &["INBOX"], payload_labels: false }),
    ("gmail.mark_read", LabelChange { add: &[], remove: &["UNREAD"], payload_labels: false }),
    ("gmail.spam", LabelChange { add: &["SPAM"], remove: &["INBOX"], payload_labels: false }),
    ("gmail.label", LabelChange { add: &[], remove: &[], payload_labels: true }),
];

/// The labels `action_type` changes, if it is a Gmail label change.
pub fn label_change(action_type: &str) -> Option<LabelChange> {
    LABEL_CHANGES.iter().find(|(name, _)| *name == action_type).map(|(_, change)| *change)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(action_type: &str, payload: Value) -> String {
        validate(action_type, &payload, "payload").expect("a Google type").expect_err("refused").field
    }

    #[test]
    fn other_types_are_not_described_here() {
        assert!(validate("send_email", &json!({}), "payload").is_none());
        assert!(schema("send_email").is_none());
        assert!(describe("send_email", &json!({})).is_none());
    }

    #[test]
    fn every_bad_field_is_named() {
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        let cases = vec![
            ("gmail.reply", json!("x"), "payload"),
            ("gmail.reply", json!({"text": "t"}), "payload.message_id"),
            ("gmail.reply", json!({"message_id": "../x", "text": "t"}), "payload.message_id"),
            ("gmail.reply", json!({"message_id": "m1"}), "payload.text"),
            ("gmail.reply", json!({"message_id": "m1", "text": ""}), "payload.text"),
            ("gmail.reply", json!({"message_id": "m1", "text": long}), "payload.text"),
            ("gmail.reply", json!({"message_id": "m1", "text": "t", "html": 5}), "payload.html"),
            ("gmail.reply", json!({"message_id": "m1", "text": "t", "cc": ["a@example.com", "bad"]}), "payload.cc[1]"),
            ("gmail.reply", json!({"message_id": "m1", "text": "t", "bcc": []}), "payload.bcc"),
            ("gmail.forward", json!({"message_id": "m1"}), "payload.to"),
            ("gmail.forward", json!({"message_id": "m1", "to": []}), "payload.to"),
            ("gmail.forward", json!({"message_id": "m1", "to": ["a@example.com", "x", "y"]}), "payload.to[1]"),
            ("drive.move_file", json!({"file_id": "f1"}), "payload.to_folder_id"),
            ("drive.move_file", json!({"file_id": "f 1", "to_folder_id": "d"}), "payload.file_id"),
            ("docs.create_document", json!({"title": " "}), "payload.title"),
            ("docs.create_document", json!({"title": "a\nb"}), "payload.title"),
            ("docs.create_document", json!({"title": "é".repeat(257)}), "payload.title"),
            ("docs.create_document", json!({"title": "T", "body": "x"}), "payload.body"),
            ("tasks.create", json!({"title": "T", "due": "tomorrow"}), "payload.due"),
            ("tasks.create", json!({"title": "T", "tasklist": "a/b"}), "payload.tasklist"),
            ("tasks.create", json!({"title": "T", "notes": "n".repeat(MAX_TASK_NOTES_CHARS + 1)}), "payload.notes"),
        ];
        for (t, payload, expected) in cases {
            assert_eq!(field(t, payload.clone()), expected, "{t} {payload}");
        }
        let err = validate("gmail.reply", &json!({"message_id": "m1"}), "steps[2].payload").unwrap().unwrap_err();
        assert_eq!(err.field, "steps[2].payload.text");
    }

    #[test]
    fn good_payloads_pass_and_null_counts_as_absent() {
        let good = [
            ("gmail.reply", json!({"message_id": "18c-a_1", "text": "Thanks", "cc": ["a@example.com"], "html": null})),
            ("gmail.forward", json!({"message_id": "m1", "to": ["a@example.com"], "text": "FYI"})),
            ("drive.move_file", json!({"file_id": "f1", "to_folder_id": "root"})),
            ("docs.create_document", json!({"title": "Notes é", "text": "Hello"})),
            (
                "tasks.create",
                json!({"title": "T", "notes": "n", "due": "2026-03-02T09:00:00Z", "tasklist": "@default"}),
            ),
        ];
        for (t, payload) in good {
            assert_eq!(validate(t, &payload, "payload"), Some(Ok(())), "{t} {payload}");
        }
    }

    /// Valid and invalid samples of every type: schema and validator agree.
    #[test]
    fn schemas_agree_with_the_validators() {
        let samples: Vec<(&str, Value, bool)> = vec![
            ("gmail.reply", json!({"message_id": "m1", "text": "t"}), true),
            ("gmail.reply", json!({"message_id": "m1", "text": ""}), false),
            ("gmail.reply", json!({"message_id": "m 1", "text": "t"}), false),
            ("gmail.reply", json!({"message_id": "m1", "text": "t", "cc": ["nope"]}), false),
            ("gmail.reply", json!({"message_id": "m1", "text": "t", "x": 1}), false),
            ("gmail.forward", json!({"message_id": "m1", "to": ["a@example.com"]}), true),
            ("gmail.forward", json!({"message_id": "m1", "to": []}), false),
            ("gmail.forward", json!({"message_id": "m1", "to": vec!["a@example.com"; 21]}), false),
            ("drive.move_file", json!({"file_id": "f1", "to_folder_id": "d1"}), true),
            ("drive.move_file", json!({"file_id": "f1"}), false),
            ("docs.create_document", json!({"title": "T"}), true),
            ("docs.create_document", json!({"title": "  "}), false),
            ("docs.create_document", json!({"title": "a\tb"}), false),
            ("docs.create_document", json!({"title": "x".repeat(257)}), false),
            ("tasks.create", json!({"title": "T", "due": "2026-03-02T09:00:00Z"}), true),
            ("tasks.create", json!({"title": "T", "due": "soon"}), false),
            ("tasks.create", json!({"title": "T", "tasklist": "bad list"}), false),
            ("tasks.create", json!({"title": "T", "notes": "n".repeat(MAX_TASK_NOTES_CHARS)}), true),
        ];
        for (t, payload, valid) in samples {
            let schema = schema(t).expect("a schema");
            let compiled = crate::domain::custom_types::compile(&schema).expect("it compiles");
            assert_eq!(compiled.is_valid(&payload), valid, "schema of {t} on {payload}");
            assert_eq!(validate(t, &payload, "payload") == Some(Ok(())), valid, "validator of {t} on {payload}");
        }
    }

    #[test]
    fn forward_domains_are_matched_exactly_or_as_parents() {
        let allowed = vec!["Example.com".to_owned(), "@partner.org".to_owned()];
        let p = |to: Value| json!({"message_id": "m1", "to": to});
        assert_eq!(
            forward_domains_allowed(&p(json!(["a@EXAMPLE.com", "b@eu.example.com", "c@partner.org"])), &allowed),
            Ok(())
        );
        let (field, _) =
            forward_domains_allowed(&p(json!(["a@example.com", "b@badexample.com"])), &allowed).unwrap_err();
        assert_eq!(field, "payload.to[1]");
        let (field, _) = forward_domains_allowed(&p(json!(["a@example.com.evil.net"])), &allowed).unwrap_err();
        assert_eq!(field, "payload.to[0]");
        let (field, message) = forward_domains_allowed(&p(json!(["a@example.com"])), &[]).unwrap_err();
        assert_eq!(field, "payload.to");
        assert!(message.contains("not allowed"));
    }

    #[test]
    fn previews_are_sentences_with_titles_cut_by_characters() {
        assert_eq!(
            describe("gmail.reply", &json!({"message_id": "18c", "text": "t"})).unwrap(),
            "reply to Gmail message 18c (to the sender)"
        );
        assert_eq!(
            describe("gmail.forward", &json!({"message_id": "m1", "to": ["a@b.com", "c@d.com"]})).unwrap(),
            "forward Gmail message m1 to a@b.com, c@d.com"
        );
        assert_eq!(
            describe("drive.move_file", &json!({"file_id": "F", "to_folder_id": "D"})).unwrap(),
            "move Drive file F to folder D"
        );
        assert_eq!(
            describe("tasks.create", &json!({"title": "Call", "due": "2026-03-02T09:00:00Z"})).unwrap(),
            "create task \"Call\" due 2026-03-02"
        );
        let long = describe("docs.create_document", &json!({"title": "é".repeat(300)})).unwrap();
        assert_eq!(long.chars().filter(|c| *c == 'é').count(), PREVIEW_TITLE_CHARS - 1);
        assert!(long.contains('…'));
    }
}
