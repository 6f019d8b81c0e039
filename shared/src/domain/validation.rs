//! Parsing of `POST /actions` bodies and of the built-in action types' payloads.
//!
//! Every error names the offending field as a JSON path (`payload.to[1]`, `steps[2].wait_for`)
//! so an agent can correct its request. Unknown fields are refused rather than ignored: a typo
//! in a safety-relevant field (`risk_scor`) must not silently fall back to a default.

use crate::domain::custom_types::CustomTypes;
use crate::domain::{EmailAddress, IsoDuration, StepKind};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Upper bound on the serialized payload (or whole plan) of one action.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub const MAX_PLAN_STEPS: usize = 20;
/// Deepest nesting of arrays and objects accepted inside a payload. The stored action wraps a
/// payload a few levels deeper, and every reader (serde_json stops at 128) must be able to
/// read what was stored.
pub const MAX_PAYLOAD_DEPTH: usize = 32;
/// The longest a wait step may rest.
pub const MAX_WAIT_SECS: u64 = 365 * 86_400;

/// A payload of a built-in type, or of one the policy declares (its schema), bounded in depth.
fn check_payload(action_type: &str, payload: &Value, path: &str, custom: &CustomTypes) -> Result<(), FieldError> {
    if BUILTIN_ACTION_TYPES.contains(&action_type) {
        return validate_payload(action_type, payload, path);
    }
    if let Some(deep) = too_deep(payload, path, MAX_PAYLOAD_DEPTH) {
        return Err(FieldError::new(
            deep,
            format!("nests too deeply (at most {MAX_PAYLOAD_DEPTH} levels inside a payload)"),
        ));
    }
    custom.check(action_type, payload, path).unwrap_or_else(|| {
        let field = if path == "payload" { "action_type".to_owned() } else { path.replace(".payload", ".action_type") };
        let known: Vec<&str> = BUILTIN_ACTION_TYPES.iter().copied().chain(custom.names()).collect();
        Err(FieldError::new(field, format!("unknown action type `{action_type}`; known types: {}", known.join(", "))))
    })
}

/// Every action type the system knows a handler (or a manual procedure) for.
pub const BUILTIN_ACTION_TYPES: &[&str] = &[
    "send_email",
    "gmail.flag",
    "gmail.archive",
    "gmail.mark_read",
    "gmail.spam",
    "gmail.label",
    "gmail.delete",
    "calendar.create_event",
    "gmail.reply",
    "gmail.forward",
    "drive.move_file",
    "docs.create_document",
    "tasks.create",
    "http_request",
    "make_payment",
    "make_purchase",
];

pub use crate::domain::field_error::FieldError;

/// A validated `POST /actions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateActionRequest {
    /// The request's `action_type`, or `"plan"` when it gave `steps`.
    pub action_type: String,
    /// The request's `payload`, or `null` for a plan.
    pub payload: Value,
    pub steps: Vec<StepKind>,
    pub risk_score: Option<u8>,
    pub confidence: Option<f64>,
    pub priority: i32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub rate_limit_key: Option<String>,
    pub approver: Option<EmailAddress>,
    /// `approver = "group:<name>"`: everyone in that group of the policy is asked.
    pub approver_group: Option<String>,
    /// Where decisions and end states are posted (`crate::domain::notify`).
    pub notify_url: Option<String>,
    pub dry_run: bool,
    /// An administrator proposes it although a human rejected the same request recently.
    pub force: bool,
}

impl CreateActionRequest {
    /// A body naming only built-in action types (see [`CreateActionRequest::parse_with`]).
    pub fn parse(body: &Value, now: DateTime<Utc>) -> Result<Self, FieldError> {
        Self::parse_with(body, now, &CustomTypes::default())
    }

    /// A body whose action types are built in or declared by the policy (`custom`).
    pub fn parse_with(body: &Value, now: DateTime<Utc>, custom: &CustomTypes) -> Result<Self, FieldError> {
        let mut obj = Obj::root(body)?;
        let action_type = obj.opt_str("action_type")?;
        let payload = obj.take("payload");
        let steps_value = obj.take("steps");
        let risk_score = obj.opt_int("risk_score", 0, 100)?.map(|n| n as u8);
        let confidence = obj.opt_number("confidence", 0.0, 1.0)?;
        let priority = obj.opt_int("priority", -1000, 1000)?.unwrap_or(0) as i32;
        let scheduled_for = obj.opt_time("scheduled_for")?;
        if let Some(t) = scheduled_for {
            if t > now + chrono::Duration::days(366) {
                return Err(FieldError::new("scheduled_for", "must be within a year from now"));
            }
        }
        let rate_limit_key = obj.opt_string_bounded("rate_limit_key", 256)?;
        let (approver, approver_group) = match obj.opt_str("approver")? {
            None => (None, None),
            Some(raw) => match crate::domain::approvers::ApproverRef::parse(&raw) {
                Some(crate::domain::approvers::ApproverRef::Address(a)) => (Some(a), None),
                Some(crate::domain::approvers::ApproverRef::Group(g)) => (None, Some(g)),
                None => return Err(FieldError::new("approver", "must be an email address or group:<name>")),
            },
        };
        let dry_run = obj.opt_bool("dry_run")?.unwrap_or(false);
        let force = obj.opt_bool("force")?.unwrap_or(false);
        let notify_url =
            obj.opt_string_bounded("notify_url", crate::domain::notify::MAX_NOTIFY_URL_CHARS)?.map(|raw| {
                crate::domain::notify::check_notify_url(&raw)
                    .map(|_| raw)
                    .map_err(|message| FieldError::new("notify_url", message))
            });
        let notify_url = notify_url.transpose()?;
        obj.finish()?;

        let (action_type, payload, steps) = match (action_type, steps_value) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new("steps", "give either action_type and payload, or steps, not both"))
            }
            (None, None) => return Err(FieldError::new("action_type", "is required (or give steps for a plan)")),
            (Some(action_type), None) => {
                let payload = payload.ok_or_else(|| FieldError::new("payload", "is required"))?;
                check_size("payload", payload)?;
                check_payload(&action_type, payload, "payload", custom)?;
                let step = StepKind::Action { action_type: action_type.clone(), payload: payload.clone() };
                (action_type, payload.clone(), vec![step])
            }
            (None, Some(steps)) => {
                if payload.is_some() {
                    return Err(FieldError::new("payload", "a plan gives each step its own payload"));
                }
                check_size("steps", steps)?;
                let steps = parse_steps(steps, now, custom)?;
                (crate::domain::action::PLAN_ACTION_TYPE.to_owned(), Value::Null, steps)
            }
        };
        Ok(Self {
            action_type,
            payload,
            steps,
            risk_score,
            confidence,
            priority,
            scheduled_for,
            rate_limit_key,
            approver,
            approver_group,
            notify_url,
            dry_run,
            force,
        })
    }

    pub fn action_steps(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().filter_map(StepKind::action_type)
    }
}

/// A payload an approver gives in place of an action's own (`payload` in the errors): held
/// to the same rules as at intake.
pub fn check_replacement_payload(action_type: &str, payload: &Value, custom: &CustomTypes) -> Result<(), FieldError> {
    check_size("payload", payload)?;
    check_payload(action_type, payload, "payload", custom)
}

fn check_size(field: &str, v: &Value) -> Result<(), FieldError> {
    let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(FieldError {
            field: field.to_owned(),
            message: format!("is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}"),
            too_large: true,
        });
    }
    Ok(())
}

fn parse_steps(steps: &Value, now: DateTime<Utc>, custom: &CustomTypes) -> Result<Vec<StepKind>, FieldError> {
    let items = steps.as_array().ok_or_else(|| FieldError::new("steps", "must be an array"))?;
    if items.is_empty() || items.len() > MAX_PLAN_STEPS {
        return Err(FieldError::new("steps", format!("must have between 1 and {MAX_PLAN_STEPS} steps")));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut has_action = false;
    for (i, item) in items.iter().enumerate() {
        let path = format!("steps[{i}]");
        let mut obj = Obj::at(item, &path)?;
        let kind = if let Some(action_type) = obj.opt_str("action_type")? {
            let payload =
                obj.take("payload").ok_or_else(|| FieldError::new(format!("{path}.payload"), "is required"))?;
            check_payload(&action_type, payload, &format!("{path}.payload"), custom)?;
            has_action = true;
            StepKind::Action { action_type, payload: payload.clone() }
        } else if let Some(text) = obj.opt_str("wait_for")? {
            let field = format!("{path}.wait_for");
            let d = IsoDuration::parse(&text).map_err(|e| FieldError::new(&field, e.to_string()))?;
            if d.as_secs() == 0 || d.as_secs() > MAX_WAIT_SECS {
                return Err(FieldError::new(field, "must be longer than zero and at most a year"));
            }
            StepKind::WaitFor { wait_for: d }
        } else if let Some(t) = obj.opt_time("wait_until")? {
            let field = format!("{path}.wait_until");
            if t <= now {
                return Err(FieldError::new(field, "must be in the future"));
            }
            if t > now + chrono::Duration::seconds(MAX_WAIT_SECS as i64) {
                return Err(FieldError::new(field, "must be within a year from now"));
            }
            StepKind::WaitUntil { wait_until: t }
        } else {
            return Err(FieldError::new(path, "a step needs action_type and payload, wait_for, or wait_until"));
        };
        obj.finish()?;
        out.push(kind);
    }
    if !has_action {
        return Err(FieldError::new("steps", "a plan needs at least one action step"));
    }
    if !matches!(out.last(), Some(StepKind::Action { .. })) {
        return Err(FieldError::new(
            format!("steps[{}]", out.len() - 1),
            "a plan must end with an action step, not a wait",
        ));
    }
    Ok(out)
}

/// The nesting depth of a JSON value (a scalar is 0, `[]` is 1).
pub fn json_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The path of the first value nested deeper than `max` inside `value` (at `path`), if any.
fn too_deep(value: &Value, path: &str, max: usize) -> Option<String> {
    if max == 0 {
        return matches!(value, Value::Array(_) | Value::Object(_)).then(|| path.to_owned());
    }
    match value {
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| too_deep(v, &format!("{path}[{i}]"), max - 1))
        }
        Value::Object(map) => map.iter().find_map(|(k, v)| too_deep(v, &format!("{path}.{k}"), max - 1)),
        _ => None,
    }
}

/// Validates the payload of a built-in action type. `path` is where the payload sits.
pub fn validate_payload(action_type: &str, payload: &Value, path: &str) -> Result<(), FieldError> {
    if let Some(deep) = too_deep(payload, path, MAX_PAYLOAD_DEPTH) {
        return Err(FieldError::new(
            deep,
            format!("nests too deeply (at most {MAX_PAYLOAD_DEPTH} levels inside a payload)"),
        ));
    }
    if let Some(checked) = crate::domain::google_payloads::validate(action_type, payload, path) {
        return checked;
    }
    let mut p = Obj::at(payload, path)?;
    match action_type {
        "send_email" => {
            p.email_list("to", 1, 50)?;
            if p.has("cc") {
                p.email_list("cc", 0, 50)?;
            }
            let subject = p.req_str("subject")?;
            if subject.trim().is_empty() || subject.chars().count() > 998 || subject.contains(['\r', '\n']) {
                return Err(p.err("subject", "must be one non-empty line of at most 998 characters"));
            }
            let text = p.opt_str("text")?;
            let html = p.opt_str("html")?;
            if text.is_none() && html.is_none() {
                return Err(p.err("text", "give text, html or both"));
            }
        }
        "gmail.flag" | "gmail.archive" | "gmail.mark_read" | "gmail.spam" | "gmail.delete" => {
            p.message_id()?;
        }
        "gmail.label" => {
            p.message_id()?;
            let labels =
                p.req("label_ids")?.as_array().ok_or_else(|| p.err("label_ids", "must be an array of label ids"))?;
            if labels.is_empty() || labels.len() > 100 {
                return Err(p.err("label_ids", "must name between 1 and 100 labels"));
            }
            for (i, label) in labels.iter().enumerate() {
                let ok = label
                    .as_str()
                    .is_some_and(|s| !s.is_empty() && s.chars().count() <= 256 && !s.chars().any(char::is_control));
                if !ok {
                    return Err(p.err(&format!("label_ids[{i}]"), "must be a non-empty label id"));
                }
            }
        }
        "calendar.create_event" => {
            if let Some(id) = p.opt_str("calendar_id")? {
                if id.is_empty() || id.chars().count() > 1024 {
                    return Err(p.err("calendar_id", "must be 1 to 1024 characters"));
                }
            }
            let summary = p.req_str("summary")?;
            if summary.trim().is_empty() || summary.chars().count() > 1024 {
                return Err(p.err("summary", "must be 1 to 1024 characters"));
            }
            let start = p.req_time("start")?;
            let end = p.req_time("end")?;
            if end <= start {
                return Err(p.err("end", "must be after start"));
            }
            if p.has("attendees") {
                p.email_list("attendees", 0, 100)?;
            }
            for field in ["location", "description"] {
                if let Some(s) = p.opt_str(field)? {
                    if s.chars().count() > 8192 {
                        return Err(p.err(field, "is too long (8192 characters at most)"));
                    }
                }
            }
        }
        "http_request" => {
            validate_http_request(&mut p, true)?;
        }
        "make_payment" => {
            p.positive_amount("amount")?;
            p.currency("currency")?;
            let to = p.req_str("recipient")?;
            if to.trim().is_empty() || to.chars().count() > 256 {
                return Err(p.err("recipient", "must be 1 to 256 characters"));
            }
            p.opt_str("reference")?;
        }
        "make_purchase" => {
            p.positive_amount("amount")?;
            p.currency("currency")?;
            let item = p.req_str("item")?;
            if item.trim().is_empty() || item.chars().count() > 1024 {
                return Err(p.err("item", "must be 1 to 1024 characters"));
            }
            p.opt_str("vendor")?;
            p.opt_int("quantity", 1, 10_000)?;
        }
        other => {
            let field =
                if path == "payload" { "action_type".to_owned() } else { path.replace(".payload", ".action_type") };
            return Err(FieldError::new(
                field,
                format!("unknown action type `{other}`; known types: {}", BUILTIN_ACTION_TYPES.join(", ")),
            ));
        }
    }
    p.finish()
}

pub const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

fn validate_http_request(p: &mut Obj<'_>, allow_rollback: bool) -> Result<(), FieldError> {
    let method = p.req_str("method")?;
    if !HTTP_METHODS.contains(&method.as_str()) {
        return Err(p.err("method", &format!("must be one of {}", HTTP_METHODS.join(", "))));
    }
    let raw_url = p.req_str("url")?;
    let url = url::Url::parse(&raw_url).map_err(|e| p.err("url", &format!("is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(p.err("url", "must be an http or https URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(p.err("url", "must not carry credentials; put them in headers"));
    }
    if let Some(headers) = p.take("headers") {
        let map = headers
            .as_object()
            .ok_or_else(|| p.err("headers", "must be an object of header names to string values"))?;
        for (name, value) in map {
            let valid_name =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name
                || ["host", "content-length", "transfer-encoding", "connection"]
                    .contains(&name.to_ascii_lowercase().as_str())
            {
                return Err(p.err(&format!("headers.{name}"), "is not a header that may be set"));
            }
            let single_line = value.as_str().is_some_and(|v| !v.contains(['\r', '\n']));
            if !single_line {
                return Err(p.err(&format!("headers.{name}"), "must be a single-line string"));
            }
        }
    }
    p.take("body");
    if let Some(ms) = p.opt_int("timeout_ms", 100, 30_000)? {
        let _ = ms;
    }
    if allow_rollback {
        if let Some(rollback) = p.take("rollback") {
            let path = format!("{}.rollback", p.path);
            let mut r = Obj::at(rollback, &path)?;
            validate_http_request(&mut r, false)?;
            r.finish()?;
        }
    }
    Ok(())
}

/// A JSON object being read field by field; `finish` refuses whatever was not read.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    read: Vec<&'a str>,
}

impl<'a> Obj<'a> {
    fn root(v: &'a Value) -> Result<Self, FieldError> {
        let map = v.as_object().ok_or_else(|| FieldError::new("$", "the body must be a JSON object"))?;
        Ok(Self { map, path: String::new(), read: Vec::new() })
    }

    fn at(v: &'a Value, path: &str) -> Result<Self, FieldError> {
        let map = v.as_object().ok_or_else(|| FieldError::new(path, "must be an object"))?;
        Ok(Self { map, path: path.to_owned(), read: Vec::new() })
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

    /// Whether `name` is given (not `null`); a `null` one counts as read and absent.
    fn has(&mut self, name: &str) -> bool {
        if let Some((key, value)) = self.map.get_key_value(name) {
            if value.is_null() {
                self.read.push(key.as_str());
            }
        }
        self.map.get(name).is_some_and(|v| !v.is_null())
    }

    /// The value of `name`, treating JSON `null` as absent.
    fn take(&mut self, name: &str) -> Option<&'a Value> {
        let (key, value) = self.map.get_key_value(name)?;
        self.read.push(key.as_str());
        (!value.is_null()).then_some(value)
    }

    fn req(&mut self, name: &str) -> Result<&'a Value, FieldError> {
        self.take(name).ok_or_else(|| self.err(name, "is required"))
    }

    fn opt_str(&mut self, name: &str) -> Result<Option<String>, FieldError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(name, "must be a string")),
        }
    }

    fn req_str(&mut self, name: &str) -> Result<String, FieldError> {
        self.opt_str(name)?.ok_or_else(|| self.err(name, "is required"))
    }

    fn opt_string_bounded(&mut self, name: &str, max: usize) -> Result<Option<String>, FieldError> {
        match self.opt_str(name)? {
            Some(s) if s.is_empty() || s.len() > max || s.chars().any(char::is_control) => {
                Err(self.err(name, &format!("must be 1 to {max} printable characters")))
            }
            other => Ok(other),
        }
    }

    fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, FieldError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(name, "must be true or false")),
        }
    }

    fn opt_int(&mut self, name: &str, min: i64, max: i64) -> Result<Option<i64>, FieldError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(self.err(name, &format!("must be a whole number from {min} to {max}"))),
            },
        }
    }

    fn opt_number(&mut self, name: &str, min: f64, max: f64) -> Result<Option<f64>, FieldError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) if n.is_finite() && (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(self.err(name, &format!("must be a number from {min} to {max}"))),
            },
        }
    }

    fn positive_amount(&mut self, name: &str) -> Result<f64, FieldError> {
        match self.take(name).and_then(Value::as_f64) {
            Some(n) if n.is_finite() && n > 0.0 && n <= 1e12 => Ok(n),
            _ => Err(self.err(name, "must be a positive number")),
        }
    }

    fn currency(&mut self, name: &str) -> Result<(), FieldError> {
        let c = self.req_str(name)?;
        if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()) {
            Ok(())
        } else {
            Err(self.err(name, "must be an ISO 4217 code such as USD"))
        }
    }

    fn opt_time(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(&s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| self.err(name, "must be an RFC 3339 time such as 2026-01-31T09:00:00Z")),
        }
    }

    fn req_time(&mut self, name: &str) -> Result<DateTime<Utc>, FieldError> {
        self.opt_time(name)?.ok_or_else(|| self.err(name, "is required"))
    }

    fn email_list(&mut self, name: &str, min: usize, max: usize) -> Result<Vec<EmailAddress>, FieldError> {
        let items = self.req(name)?.as_array().ok_or_else(|| self.err(name, "must be an array of email addresses"))?;
        if items.len() < min || items.len() > max {
            return Err(self.err(name, &format!("must have between {min} and {max} addresses")));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .filter(|s| s.trim() == *s)
                    .and_then(EmailAddress::parse)
                    .ok_or_else(|| self.err(&format!("{name}[{i}]"), "must be an email address"))
            })
            .collect()
    }

    fn message_id(&mut self) -> Result<(), FieldError> {
        let id = self.req_str("message_id")?;
        let ok =
            !id.is_empty() && id.len() <= 256 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(())
        } else {
            Err(self.err("message_id", "must be a Gmail message id (letters, digits, - and _)"))
        }
    }

    fn finish(self) -> Result<(), FieldError> {
        match self.map.keys().find(|k| !self.read.contains(&k.as_str())) {
            None => Ok(()),
            Some(unknown) => Err(self.err(unknown, "is not a known field")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn field_of(body: Value) -> String {
        CreateActionRequest::parse(&body, now()).unwrap_err().field
    }

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn a_deeply_nested_payload_is_refused_with_its_field() {
        let deep = json!({"action_type": "http_request", "payload": {"method": "POST", "url": "https://hooks.example.com/x", "body": nested(124)}});
        let field = field_of(deep);
        assert!(field.starts_with("payload.body[0]"), "{field}");
        let plan = json!({"steps": [{"action_type": "http_request", "payload": {"method": "POST", "url": "https://hooks.example.com/x", "body": nested(40)}}]});
        assert!(field_of(plan).starts_with("steps[0].payload.body"));
        let fine = json!({"action_type": "http_request", "payload": {"method": "POST", "url": "https://hooks.example.com/x", "body": nested(30)}});
        assert!(CreateActionRequest::parse(&fine, now()).is_ok());
        assert_eq!(json_depth(&nested(5)), 5);
    }

    #[test]
    fn accepts_a_single_email_action() {
        let req = CreateActionRequest::parse(
            &json!({"action_type": "send_email", "payload": {"to": ["a@example.com"], "subject": "Hi", "text": "Hello"}, "risk_score": 20, "confidence": 0.9}),
            now(),
        )
        .unwrap();
        assert_eq!(req.action_type, "send_email");
        assert_eq!(req.steps.len(), 1);
        assert_eq!(req.risk_score, Some(20));
        assert!(!req.dry_run);
    }

    #[test]
    fn accepts_a_plan_with_waits() {
        let req = CreateActionRequest::parse(
            &json!({"steps": [
                {"action_type": "gmail.label", "payload": {"message_id": "m1", "label_ids": ["L1"]}},
                {"wait_for": "PT2H"},
                {"wait_until": "2026-03-05T09:00:00Z"},
                {"action_type": "gmail.archive", "payload": {"message_id": "m1"}}
            ]}),
            now(),
        )
        .unwrap();
        assert_eq!(req.action_type, "plan");
        assert_eq!(req.payload, Value::Null);
        assert_eq!(req.steps.len(), 4);
        assert_eq!(req.action_steps().collect::<Vec<_>>(), vec!["gmail.label", "gmail.archive"]);
    }

    #[test]
    fn every_bad_field_is_named() {
        let email = |payload: Value| json!({"action_type": "send_email", "payload": payload});
        let cases = vec![
            (json!([1, 2]), "$"),
            (json!({}), "action_type"),
            (json!({"action_type": 5, "payload": {}}), "action_type"),
            (json!({"action_type": "nope", "payload": {}}), "action_type"),
            (json!({"action_type": "send_email"}), "payload"),
            (email(json!("x")), "payload"),
            (email(json!({"subject": "s", "text": "t"})), "payload.to"),
            (email(json!({"to": ["a@example.com", "bad"], "subject": "s", "text": "t"})), "payload.to[1]"),
            (email(json!({"to": ["a@example.com"], "subject": "s"})), "payload.text"),
            (email(json!({"to": ["a@example.com"], "subject": "a\nb", "text": "t"})), "payload.subject"),
            (email(json!({"to": ["a@example.com"], "subject": "s", "text": "t", "bcc": []})), "payload.bcc"),
            (json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "risk_score": 101}), "risk_score"),
            (json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "risk_score": "high"}), "risk_score"),
            (json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "confidence": 1.5}), "confidence"),
            (
                json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "scheduled_for": "tomorrow"}),
                "scheduled_for",
            ),
            (json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "approver": "nobody"}), "approver"),
            (json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "dry_run": "yes"}), "dry_run"),
            (json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "risk_scor": 5}), "risk_scor"),
            (json!({"action_type": "gmail.flag", "payload": {"message_id": "../x"}}), "payload.message_id"),
            (
                json!({"action_type": "gmail.label", "payload": {"message_id": "m1", "label_ids": []}}),
                "payload.label_ids",
            ),
            (
                json!({"action_type": "calendar.create_event", "payload": {"summary": "x", "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T09:00:00Z"}}),
                "payload.end",
            ),
            (
                json!({"action_type": "http_request", "payload": {"method": "GET", "url": "ftp://x.example/"}}),
                "payload.url",
            ),
            (
                json!({"action_type": "http_request", "payload": {"method": "TRACE", "url": "https://x.example/"}}),
                "payload.method",
            ),
            (
                json!({"action_type": "http_request", "payload": {"method": "POST", "url": "https://x.example/", "rollback": {"method": "DELETE"}}}),
                "payload.rollback.url",
            ),
            (
                json!({"action_type": "make_payment", "payload": {"amount": -1, "currency": "USD", "recipient": "r"}}),
                "payload.amount",
            ),
            (json!({"steps": []}), "steps"),
            (json!({"steps": [{"wait_for": "PT1H"}]}), "steps"),
            (
                json!({"steps": [{"action_type": "gmail.flag", "payload": {"message_id": "m"}}, {"wait_for": "2 hours"}]}),
                "steps[1].wait_for",
            ),
            (
                json!({"steps": [{"action_type": "gmail.flag", "payload": {"message_id": "m"}}, {"wait_for": "PT1H"}]}),
                "steps[1]",
            ),
            (
                json!({"steps": [{"action_type": "gmail.flag", "payload": {"message_id": "m"}}, {"wait_until": "2020-01-01T00:00:00Z"}]}),
                "steps[1].wait_until",
            ),
            (
                json!({"steps": [{"action_type": "gmail.flag", "payload": {"message_id": "m"}}, {"action_type": "zap", "payload": {}}]}),
                "steps[1].action_type",
            ),
            (
                json!({"steps": [{"action_type": "gmail.flag", "payload": {"message_id": "m"}}], "action_type": "gmail.flag"}),
                "steps",
            ),
            (
                json!({"steps": [{"action_type": "gmail.flag", "payload": {"message_id": "m"}}], "payload": {}}),
                "payload",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(body.clone()), field, "body: {body}");
        }
    }

    #[test]
    fn oversize_payload_is_flagged_too_large() {
        let big = "x".repeat(MAX_PAYLOAD_BYTES);
        let err = CreateActionRequest::parse(
            &json!({"action_type": "send_email", "payload": {"to": ["a@example.com"], "subject": "s", "text": big}}),
            now(),
        )
        .unwrap_err();
        assert!(err.too_large);
        assert_eq!(err.field, "payload");
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let req = CreateActionRequest::parse(
            &json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "risk_score": null, "scheduled_for": null}),
            now(),
        )
        .unwrap();
        assert_eq!(req.risk_score, None);
    }

    #[test]
    fn http_request_accepts_headers_body_and_rollback() {
        let payload = json!({"method": "POST", "url": "https://hooks.example.com/x", "headers": {"X-Token": "abc"}, "body": {"a": 1},
            "rollback": {"method": "DELETE", "url": "https://hooks.example.com/x/1"}});
        validate_payload("http_request", &payload, "payload").unwrap();
        let bad_header = json!({"method": "GET", "url": "https://h.example/", "headers": {"Host": "evil"}});
        assert_eq!(validate_payload("http_request", &bad_header, "payload").unwrap_err().field, "payload.headers.Host");
    }
}
