//! The HTTP boundary shared by the API functions: who is calling, request metadata for the
//! audit trail, and the one mapping of errors to status codes and JSON bodies.

use crate::domain::{Status, UserId};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};

/// The authenticated caller, from the claims API Gateway's JWT authorizer verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub email: Option<String>,
    pub admin: bool,
}

impl Identity {
    /// Reads `sub` (and `email`, `scope`, `groups`/`cognito:groups`) from the authorizer
    /// context. There is no other way to establish identity.
    pub fn from_request(req: &Request) -> Option<Self> {
        let RequestContext::ApiGatewayV2(ctx) = req.request_context_ref()? else {
            return None;
        };
        let jwt = ctx.authorizer.as_ref()?.jwt.as_ref()?;
        Self::from_claims(&jwt.claims, jwt.scopes.as_deref().unwrap_or_default())
    }

    /// The identity the verified claims (and the authorizer's scopes) establish.
    pub fn from_claims(claims: &std::collections::HashMap<String, String>, scopes: &[String]) -> Option<Self> {
        let user = UserId::parse(claims.get("sub")?)?;
        let admin = claims.get("scope").is_some_and(|s| scope_grants_admin(s))
            || ["groups", "cognito:groups"].iter().any(|k| claims.get(*k).is_some_and(|s| groups_grant_admin(s)))
            || scopes.iter().any(|s| s == "admin");
        // An address the identity provider has not verified proves nothing about its owner.
        let verified = claims.get("email_verified").is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"));
        let email = claims
            .get("email")
            .cloned()
            .filter(|_| verified)
            .or_else(|| user.as_str().contains('@').then(|| user.as_str().to_owned()));
        Some(Self { user, email, admin })
    }

    /// Whether this caller asked for `action`: its owner by user id, or by (verified) email
    /// when the owner's id is an address. A requester never decides their own action.
    pub fn is_requester(&self, action: &crate::domain::Action) -> bool {
        action.user_id == self.user
            || self.email.as_deref().is_some_and(|e| is_same_mailbox(e, action.user_id.as_str()))
            || action
                .requester_email
                .as_deref()
                .is_some_and(|r| self.email.as_deref().is_some_and(|e| is_same_mailbox(e, r)))
    }

    /// Whether this caller is the given approver (matched on the email claim).
    pub fn is_approver(&self, approver: Option<&crate::domain::EmailAddress>) -> bool {
        match (approver, &self.email) {
            (Some(a), Some(email)) => a.matches(email),
            _ => false,
        }
    }
}

pub use crate::domain::ids::is_same_mailbox;

/// OAuth scopes are space-separated tokens (RFC 6749 §3.3: a scope never contains a space).
fn scope_grants_admin(scope: &str) -> bool {
    scope.split_ascii_whitespace().any(|t| t == "admin")
}

/// Group claims arrive as a JSON array, a comma-separated list (optionally in brackets) or one
/// name. Only a whole group value "admin" grants admin: a group named "help desk admin" does
/// not, and a space never separates groups (a name may contain one).
fn groups_grant_admin(groups: &str) -> bool {
    if let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<Value>(groups) {
        return items.iter().any(|g| g.as_str() == Some("admin"));
    }
    let inner = groups.trim();
    let inner = inner.strip_prefix('[').and_then(|g| g.strip_suffix(']')).unwrap_or(inner);
    inner.split(',').any(|g| g.trim().trim_matches('"') == "admin")
}

/// Who asked, from where: recorded with every audit event a request causes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestMeta {
    pub fn from_request(req: &Request) -> Self {
        match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => Self {
                request_id: ctx.request_id.clone(),
                source_ip: ctx.http.source_ip.clone(),
                user_agent: ctx.http.user_agent.clone().or_else(|| header(req, "user-agent")),
            },
            _ => Self { request_id: None, source_ip: None, user_agent: header(req, "user-agent") },
        }
    }
}

pub fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Every way an API request can fail, mapped to a status code in [`ApiError::into_response`].
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
            ApiError::InvalidRequest { .. } => 400,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden | ApiError::Denied { .. } => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::RateLimited { .. } => 429,
            ApiError::IdempotencyConflict | ApiError::InvalidState { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Internal(_) => 500,
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
            ApiError::Denied { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::IdempotencyConflict => "idempotency_conflict",
            ApiError::InvalidState { .. } => "invalid_state",
            ApiError::Internal(_) => "internal_error",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status_code();
        if let ApiError::Internal(e) = &self {
            // The caller gets a generic sentence; the log gets the whole chain.
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        let mut retry_after = None;
        match &self {
            ApiError::InvalidRequest { field: Some(f), .. } | ApiError::PayloadTooLarge { field: Some(f), .. } => {
                body["field"] = json!(f);
            }
            ApiError::Denied { extra, .. } | ApiError::Conflict { extra, .. } => merge(&mut body, extra),
            ApiError::RateLimited { extra, retry_after_secs, .. } => {
                merge(&mut body, extra);
                body["retry_after"] = json!(retry_after_secs);
                retry_after = Some(*retry_after_secs);
            }
            ApiError::InvalidState { status, .. } => body["status"] = json!(status),
            _ => {}
        }
        let mut response = json_response(status, &body);
        if let Some(secs) = retry_after {
            if let Ok(v) = secs.to_string().parse() {
                response.headers_mut().insert("retry-after", v);
            }
        }
        response
    }
}

fn merge(body: &mut Value, extra: &Value) {
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
}

pub fn json_response(status: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert("content-type", http::HeaderValue::from_static("application/json"));
    headers.insert("cache-control", http::HeaderValue::from_static("no-store"));
    response
}

/// An HTTP response as API Gateway's payload format 2.0 expects it from a function that is
/// not run by `lambda_http` (one that also takes direct invocations).
pub fn to_apigw_v2(response: Response<Body>) -> Value {
    use base64::Engine as _;
    let (parts, body) = response.into_parts();
    let headers: serde_json::Map<String, Value> =
        parts.headers.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), json!(v.to_str().ok()?)))).collect();
    let (body, b64) = match body {
        Body::Empty => (String::new(), false),
        Body::Text(t) => (t, false),
        Body::Binary(b) => (base64::engine::general_purpose::STANDARD.encode(b), true),
        _ => (String::new(), false),
    };
    json!({"statusCode": parts.status.as_u16(), "headers": headers, "body": body, "isBase64Encoded": b64, "cookies": []})
}

/// Splits a request path into segments, ignoring empty ones (`/actions//x/` → `["actions", "x"]`).
pub fn path_segments(req: &Request) -> Vec<String> {
    req.uri().path().split('/').filter(|s| !s.is_empty()).map(percent_decode).collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The request body as JSON, with the size cap and a clear error for anything else.
pub fn json_body(req: &Request, max_bytes: usize) -> Result<Value, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
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
pub fn optional_reason(req: &Request, max_chars: usize) -> Result<Option<String>, ApiError> {
    let body = optional_json_body(req, 16 * 1024)?;
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

/// An optional JSON body: empty is `{}`.
pub fn optional_json_body(req: &Request, max_bytes: usize) -> Result<Value, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    json_body(req, max_bytes)
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
    fn rate_limited_response_carries_retry_after() {
        let resp =
            ApiError::RateLimited { message: "slow".into(), retry_after_secs: 42, extra: json!({"window": "hour"}) }
                .into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "42");
        let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["retry_after"], 42);
        assert_eq!(body["window"], "hour");
    }

    #[test]
    fn field_is_named_in_invalid_request() {
        let resp = ApiError::invalid("payload.to[1]", "must be an email address").into_response();
        let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        assert_eq!(body["field"], "payload.to[1]");
        assert_eq!(body["message"], "must be an email address");
    }

    fn claims(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_group_whose_name_contains_admin_does_not_grant_admin() {
        for groups in
            ["help desk admin", "[help desk admin]", "[\"help desk admin\"]", "administrators", "[sysadmin, users]"]
        {
            let id = Identity::from_claims(&claims(&[("sub", "u"), ("groups", groups)]), &[]).unwrap();
            assert!(!id.admin, "{groups}");
        }
        for groups in ["admin", "[admin]", "[users, admin]", "[\"users\",\"admin\"]", "users,admin"] {
            let id = Identity::from_claims(&claims(&[("sub", "u"), ("cognito:groups", groups)]), &[]).unwrap();
            assert!(id.admin, "{groups}");
        }
        assert!(Identity::from_claims(&claims(&[("sub", "u"), ("scope", "openid admin")]), &[]).unwrap().admin);
        assert!(!Identity::from_claims(&claims(&[("sub", "u"), ("scope", "openid admins")]), &[]).unwrap().admin);
        assert!(Identity::from_claims(&claims(&[("sub", "u")]), &["admin".into()]).unwrap().admin);
    }

    #[test]
    fn a_plus_alias_is_the_same_mailbox() {
        assert!(is_same_mailbox("Alice+approve@Example.com", "alice@example.com"));
        assert!(!is_same_mailbox("alice@example.com", "alicia@example.com"));
    }

    #[test]
    fn an_unverified_email_claim_is_ignored() {
        let unverified = claims(&[("sub", "u1"), ("email", "boss@example.com"), ("email_verified", "false")]);
        assert_eq!(Identity::from_claims(&unverified, &[]).unwrap().email, None);
        let verified = claims(&[("sub", "u1"), ("email", "boss@example.com"), ("email_verified", "true")]);
        assert_eq!(Identity::from_claims(&verified, &[]).unwrap().email.as_deref(), Some("boss@example.com"));
        let unstated = claims(&[("sub", "u1"), ("email", "boss@example.com")]);
        assert_eq!(Identity::from_claims(&unstated, &[]).unwrap().email.as_deref(), Some("boss@example.com"));
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("gmail%2Eflag"), "gmail.flag");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }
}
