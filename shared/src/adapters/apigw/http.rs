//! The API Gateway boundary: a request (HTTP API, payload format 2.0) becomes a [`Call`] —
//! identity from the claims the JWT authorizer verified, request metadata, query, headers and
//! body — and a [`Reply`] or [`ApiError`] becomes a JSON response.

use crate::domain::caller::{Identity, RequestMeta};
use crate::ports::api::{ApiError, Call, Reply};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Reads `sub` (and `email`, `scope`, `groups`/`cognito:groups`) from the authorizer context.
/// There is no other way to establish identity.
pub fn identity(req: &Request) -> Option<Identity> {
    let RequestContext::ApiGatewayV2(ctx) = req.request_context_ref()? else {
        return None;
    };
    let jwt = ctx.authorizer.as_ref()?.jwt.as_ref()?;
    Identity::from_claims(&jwt.claims, jwt.scopes.as_deref().unwrap_or_default())
}

/// Who asked, from where.
pub fn meta(req: &Request) -> RequestMeta {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => RequestMeta {
            request_id: ctx.request_id.clone(),
            source_ip: ctx.http.source_ip.clone(),
            user_agent: ctx.http.user_agent.clone().or_else(|| header(req, "user-agent")),
        },
        _ => RequestMeta { request_id: None, source_ip: None, user_agent: header(req, "user-agent") },
    }
}

pub fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The call a request makes.
pub fn call(req: &Request) -> Call {
    let query = req.query_string_parameters();
    Call {
        identity: identity(req),
        meta: meta(req),
        query: query.iter().fold(
            Default::default(),
            |mut first: std::collections::BTreeMap<String, String>, (k, v)| {
                first.entry(k.to_owned()).or_insert_with(|| v.to_owned());
                first
            },
        ),
        // The first value of a repeated header, as `HeaderMap::get` gives it. A value that is
        // not visible ASCII is kept (lossily) rather than dropped, so a check that needs ASCII
        // (the `Idempotency-Key`) refuses it instead of never seeing it.
        headers: req.headers().iter().fold(Default::default(), |mut first: BTreeMap<String, String>, (k, v)| {
            first
                .entry(k.as_str().to_ascii_lowercase())
                .or_insert_with(|| String::from_utf8_lossy(v.as_bytes()).into_owned());
            first
        }),
        body: req.body().as_ref().to_vec(),
    }
}

impl From<Reply> for Response<Body> {
    fn from(reply: Reply) -> Self {
        json_response(reply.status, &reply.body)
    }
}

impl From<ApiError> for Response<Body> {
    fn from(e: ApiError) -> Self {
        if let ApiError::Internal(inner) = &e {
            // The caller gets a generic sentence; the log gets the whole chain.
            tracing::error!(error = format!("{inner:#}"), "request failed");
        }
        let mut response = json_response(e.status_code(), &e.body());
        if let Some(v) = e.retry_after().and_then(|secs| secs.to_string().parse().ok()) {
            response.headers_mut().insert("retry-after", v);
        }
        response
    }
}

/// A service's answer as a response.
pub fn respond(result: Result<Reply, ApiError>) -> Response<Body> {
    result.map_or_else(Response::from, Response::from)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_response_carries_retry_after() {
        let resp: Response<Body> =
            ApiError::RateLimited { message: "slow".into(), retry_after_secs: 42, extra: json!({"window": "hour"}) }
                .into();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "42");
        let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["retry_after"], 42);
        assert_eq!(body["window"], "hour");
    }

    #[test]
    fn field_is_named_in_invalid_request() {
        let resp: Response<Body> = ApiError::invalid("payload.to[1]", "must be an email address").into();
        let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        assert_eq!(body["field"], "payload.to[1]");
        assert_eq!(body["message"], "must be an email address");
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
