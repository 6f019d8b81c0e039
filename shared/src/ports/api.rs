//! The port the API's callers drive: one call as the services see it (who, from where, its
//! query, headers and body), the answer ([`Reply`]), and every refusal ([`ApiError`]) with its
//! status code and machine-readable code. Transport-neutral: the API Gateway adapter turns a
//! request into a [`Call`] and a reply or refusal into a response.

use crate::domain::approval::{ApprovalRecord, LinkState};
use crate::domain::caller::{Identity, RequestMeta};
use crate::domain::{Action, Status};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One API call.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// `None` only on the public approval-link routes (no authorizer).
    pub identity: Option<Identity>,
    pub meta: RequestMeta,
    /// The first value of each query parameter.
    pub query: BTreeMap<String, String>,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Call {
    /// The verified caller, or `401`.
    pub fn identity(&self) -> Result<&Identity, ApiError> {
        self.identity.as_ref().ok_or(ApiError::Unauthorized)
    }

    /// A query parameter; an empty one counts as absent.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The request body as JSON, with the size cap and a clear error for anything else.
    pub fn json_body(&self, max_bytes: usize) -> Result<Value, ApiError> {
        let bytes: &[u8] = &self.body;
        if bytes.len() > max_bytes {
            return Err(ApiError::PayloadTooLarge {
                message: format!("the body is {} bytes; the limit is {max_bytes}", bytes.len()),
                field: Some("$".into()),
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid("$", "the body is empty; send a JSON object"));
        }
        serde_json::from_slice(bytes).map_err(|e| ApiError::invalid("$", format!("the body is not valid JSON: {e}")))
    }

    /// A `{reason?}` body (cancel, approve, reject, …): at most `max_chars`, no other fields.
    pub fn optional_reason(&self, max_chars: usize) -> Result<Option<String>, ApiError> {
        let body = self.optional_json_body(16 * 1024)?;
        let reason = match body.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= max_chars => Some(s.clone()),
            Some(_) => {
                return Err(ApiError::invalid("reason", format!("must be a string of at most {max_chars} characters")))
            }
        };
        if let Some(extra) = body.as_object().and_then(|o| o.keys().find(|k| *k != "reason")) {
            return Err(ApiError::invalid(extra.clone(), "is not a known field"));
        }
        Ok(reason)
    }

    /// An approval's body `{reason?, payload?, plan_digest?}`: the reason as
    /// [`Call::optional_reason`] has it; a payload to approve in place of the action's own (edit
    /// before approve); the digest of the plan the caller reviewed. Larger than a reason's body:
    /// the payload itself is held to its 64 KiB by validation.
    pub fn approval_body(&self, max_chars: usize) -> Result<ApprovalBody, ApiError> {
        let mut body = self.optional_json_body(128 * 1024)?;
        let mut take = |name: &str| match body.as_object_mut().and_then(|o| o.remove(name)) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        };
        let payload = take("payload");
        let plan_digest = match take("plan_digest") {
            None => None,
            Some(Value::String(d)) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => Some(d),
            Some(_) => {
                return Err(ApiError::invalid("plan_digest", "must be the 64 hex digits of the action's plan_digest"))
            }
        };
        let rest = Call { body: serde_json::to_vec(&body).unwrap_or_default(), ..Call::default() };
        Ok(ApprovalBody { reason: rest.optional_reason(max_chars)?, payload, plan_digest })
    }

    /// An optional JSON body: empty is `{}`.
    pub fn optional_json_body(&self, max_bytes: usize) -> Result<Value, ApiError> {
        let bytes: &[u8] = &self.body;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        self.json_body(max_bytes)
    }
}

/// An approval's body (`POST /actions/{id}/approve|reject`).
#[derive(Debug, Clone, Default)]
pub struct ApprovalBody {
    pub reason: Option<String>,
    /// Approve only: the payload to run in place of the action's own.
    pub payload: Option<Value>,
    /// The plan the caller reviewed: required once the action was edited, so an approval of
    /// what was there before never counts for the changed payload.
    pub plan_digest: Option<String>,
}

/// What an approval link shows (GET/HEAD) or what a decision by link did (POST), for the API
/// Gateway adapter to render as a page.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkPage {
    /// The confirmation page: the plan in words, risk, reasons, a form.
    /// `not_editable`: why the page does not offer to approve a changed payload (`None`: it does).
    Confirm { record: ApprovalRecord, action: Action, lines: Vec<String>, not_editable: Option<String> },
    /// The link no longer decides anything (decided, expired, closed).
    State(LinkState),
    /// The decision was recorded.
    Decided(Action),
    /// A refusal or a problem, in a sentence.
    Message { status: u16, title: &'static str, sentence: String },
}

/// A JSON answer and its status code.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Self {
        Self { status, body: body.clone() }
    }
}

/// Every way an API request can fail: a status code, a machine-readable `error` code and a body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest { message: String, field: Option<String> },
    #[error("{message}")]
    PayloadTooLarge { message: String, field: Option<String> },
    #[error("missing or invalid identity")]
    Unauthorized,
    #[error("this route needs an administrator")]
    Forbidden,
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{method} is not allowed on this route")]
    MethodNotAllowed { method: String },
    /// A policy denial (`blocked`, `kyc_required`) with the reasons that fired.
    #[error("{message}")]
    Denied { code: &'static str, message: String, extra: Value },
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: i64, extra: Value },
    /// A request that conflicts with what the action is (`not_reversible`), with details.
    #[error("{message}")]
    Conflict { code: &'static str, message: String, extra: Value },
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyConflict,
    /// A request a check refused although it parsed (`connector_refused`,
    /// `domain_not_allowed`), with details such as the `field`.
    #[error("{message}")]
    Refused { code: &'static str, message: String, extra: Value },
    /// Something the request depends on could not answer now (`connector_unavailable`): the
    /// same request may succeed later.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String, retry_after_secs: Option<i64> },
    #[error("the action is {status}; {message}")]
    InvalidState { status: Status, message: String },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest { message: message.into(), field: Some(field.into()) }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    pub fn status_code(&self) -> u16 {
        match self {
            ApiError::InvalidRequest { .. } | ApiError::Refused { .. } => 400,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden | ApiError::Denied { .. } => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::RateLimited { .. } => 429,
            ApiError::IdempotencyConflict | ApiError::InvalidState { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable { .. } => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Denied { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Refused { code, .. }
            | ApiError::Unavailable { code, .. } => code,
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::IdempotencyConflict => "idempotency_conflict",
            ApiError::InvalidState { .. } => "invalid_state",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The JSON body of the refusal: `{error, message}` and what the variant adds (`field`,
    /// `status`, `retry_after`, the policy's reasons).
    pub fn body(&self) -> Value {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        match self {
            ApiError::InvalidRequest { field: Some(f), .. } | ApiError::PayloadTooLarge { field: Some(f), .. } => {
                body["field"] = json!(f);
            }
            ApiError::Denied { extra, .. } | ApiError::Conflict { extra, .. } | ApiError::Refused { extra, .. } => {
                merge(&mut body, extra)
            }
            ApiError::Unavailable { retry_after_secs: Some(s), .. } => body["retry_after"] = json!(s),
            ApiError::RateLimited { extra, retry_after_secs, .. } => {
                merge(&mut body, extra);
                body["retry_after"] = json!(retry_after_secs);
            }
            ApiError::InvalidState { status, .. } => body["status"] = json!(status),
            _ => {}
        }
        body
    }

    /// Seconds to wait before trying again, when the refusal says.
    pub fn retry_after(&self) -> Option<i64> {
        match self {
            ApiError::RateLimited { retry_after_secs, .. } => Some(*retry_after_secs),
            ApiError::Unavailable { retry_after_secs, .. } => *retry_after_secs,
            _ => None,
        }
    }
}

fn merge(body: &mut Value, extra: &Value) {
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_contract_codes() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::invalid("payload.to", "bad"), 400, "invalid_request"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::NotFound("action"), 404, "not_found"),
            (ApiError::IdempotencyConflict, 409, "idempotency_conflict"),
            (ApiError::InvalidState { status: Status::Executing, message: "x".into() }, 409, "invalid_state"),
            (ApiError::Denied { code: "blocked", message: "no".into(), extra: json!({}) }, 403, "blocked"),
            (
                ApiError::RateLimited { message: "slow".into(), retry_after_secs: 42, extra: json!({}) },
                429,
                "rate_limited",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status_code(), status);
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn a_refusal_s_body_names_its_field_and_when_to_retry() {
        let slow =
            ApiError::RateLimited { message: "slow".into(), retry_after_secs: 42, extra: json!({"window": "hour"}) };
        assert_eq!(slow.retry_after(), Some(42));
        let body = slow.body();
        assert_eq!(
            (body["error"].as_str(), body["retry_after"].as_i64(), body["window"].as_str()),
            (Some("rate_limited"), Some(42), Some("hour"))
        );
        let body = ApiError::invalid("payload.to[1]", "must be an email address").body();
        assert_eq!(
            (body["field"].as_str(), body["message"].as_str()),
            (Some("payload.to[1]"), Some("must be an email address"))
        );
    }

    #[test]
    fn bodies_are_capped_and_must_be_json() {
        let call = |body: &str| Call { body: body.as_bytes().to_vec(), ..Call::default() };
        assert!(matches!(call("{}").json_body(1), Err(ApiError::PayloadTooLarge { .. })));
        assert!(matches!(call(" ").json_body(10), Err(ApiError::InvalidRequest { .. })));
        assert_eq!(call("").optional_json_body(10).unwrap(), json!({}));
        assert_eq!(call(r#"{"reason": "ok"}"#).optional_reason(10).unwrap().as_deref(), Some("ok"));
        assert!(call(r#"{"reason": "ok", "x": 1}"#).optional_reason(10).is_err());
    }
}
