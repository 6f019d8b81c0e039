//! The local gateway: plays API Gateway's HTTP API in front of the functions.
//!
//! Routes come from the template. For routes behind the JWT authorizer it turns
//! `Authorization: Bearer dev:<user_id>` (or `dev:<user_id>:admin`) into the claims the real
//! authorizer would pass, and answers 401 itself for a missing or malformed header, as API
//! Gateway does. It then invokes the function through cargo lambda's Lambda Invoke API with a
//! payload-format-2.0 event and translates the function's response back to HTTP.

use crate::template::Route;
use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// API Gateway's own payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

pub struct GatewayState {
    /// (route, binary of the function serving it).
    pub routes: Vec<(Route, String)>,
    /// Base URL of cargo lambda's invoke server.
    pub invoke_url: String,
    pub emulator: String,
    pub http: reqwest::Client,
    pub ready: AtomicBool,
    pub requests: AtomicU64,
}

pub fn router(state: Arc<GatewayState>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<Arc<GatewayState>>, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/health" => return health(&state),
        "/_local/outbox" => return outbox(&state).await,
        _ => {}
    }
    let method = req.method().as_str().to_owned();
    let Some((route, binary, params)) =
        state.routes.iter().find_map(|(r, b)| r.matches(&method, &path).map(|p| (r, b, p)))
    else {
        return plain(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    };
    let claims = if route.public {
        None
    } else {
        match dev_claims(req.headers()) {
            Some(c) => Some(c),
            None => return plain(StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"})),
        }
    };
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, json!({"message": "Request Entity Too Large"}));
    };
    let event = api_event(&parts, &body, route, &params, claims, n);
    invoke(&state, binary, &event).await
}

fn health(state: &GatewayState) -> Response<Body> {
    if state.ready.load(Ordering::Acquire) {
        plain(StatusCode::OK, json!({"status": "ok", "emulator": state.emulator, "functions": state.invoke_url}))
    } else {
        plain(StatusCode::SERVICE_UNAVAILABLE, json!({"status": "starting"}))
    }
}

async fn outbox(state: &GatewayState) -> Response<Body> {
    match crate::outbox::read(&state.http, &state.emulator).await {
        Ok(messages) => plain(StatusCode::OK, json!({ "messages": messages })),
        Err(e) => plain(StatusCode::BAD_GATEWAY, json!({"message": format!("{e:#}")})),
    }
}

/// `Bearer dev:<user>` or `Bearer dev:<user>:admin` → JWT claims; anything else → `None`.
pub fn dev_claims(headers: &HeaderMap) -> Option<Map<String, Value>> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    let rest = token.strip_prefix("dev:")?;
    let (user, admin) = match rest.split_once(':') {
        None => (rest, false),
        Some((user, "admin")) => (user, true),
        Some(_) => return None,
    };
    if user.is_empty() || user.len() > 128 || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user));
    claims.insert("iss".into(), json!("https://local.actiongate.invalid/dev"));
    if user.contains('@') {
        claims.insert("email".into(), json!(user));
    }
    if admin {
        claims.insert("scope".into(), json!("admin"));
    }
    Some(claims)
}

fn api_event(
    parts: &axum::http::request::Parts,
    body: &[u8],
    route: &Route,
    params: &[(String, String)],
    claims: Option<Map<String, Value>>,
    n: u64,
) -> Value {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), json!(v));
            }
        }
    }
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let mut query = Map::new();
    for (k, v) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        match query.get_mut(k.as_ref()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                query.insert(k.into_owned(), json!(v));
            }
        }
    }
    let route_key = format!("{} {}", route.method, route.path);
    let now = chrono::Utc::now();
    let (body_text, is_b64) = match std::str::from_utf8(body) {
        Ok(s) => (s.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let user_agent = parts.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {"method": parts.method.as_str(), "path": parts.uri.path(), "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": user_agent},
            "requestId": format!("local-{}-{n}", now.timestamp_millis()),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": is_b64,
    });
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !params.is_empty() {
        event["pathParameters"] = params.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>().into();
    }
    if !body.is_empty() {
        event["body"] = json!(body_text);
    }
    if let Some(claims) = claims {
        event["requestContext"]["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }
    event
}

async fn invoke(state: &GatewayState, binary: &str, event: &Value) -> Response<Body> {
    let url = format!("{}/2015-03-31/functions/{binary}/invocations", state.invoke_url);
    let result = state.http.post(&url).json(event).send().await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, binary, "invoking the function failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, json!({"message": "Internal Server Error"}));
        }
    };
    let function_error = response.headers().contains_key("x-amz-function-error");
    let payload: Value = match response.json().await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, binary, "the function's response is not JSON");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, json!({"message": "Internal Server Error"}));
        }
    };
    if function_error || payload.get("errorType").is_some() || payload.get("statusCode").is_none() {
        tracing::error!(binary, payload = %payload, "the function failed");
        return plain(StatusCode::INTERNAL_SERVER_ERROR, json!({"message": "Internal Server Error"}));
    }
    to_http(&payload)
}

fn to_http(payload: &Value) -> Response<Body> {
    let status = payload
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let body = payload.get("body").and_then(Value::as_str).unwrap_or_default();
    let bytes = if payload.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        base64::engine::general_purpose::STANDARD.decode(body).unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (k, v) in payload.get("headers").and_then(Value::as_object).into_iter().flatten() {
        if let (Ok(name), Some(Ok(value))) =
            (k.parse::<axum::http::HeaderName>(), v.as_str().map(HeaderValue::from_str))
        {
            headers.insert(name, value);
        }
    }
    for (k, values) in payload.get("multiValueHeaders").and_then(Value::as_object).into_iter().flatten() {
        for v in values.as_array().into_iter().flatten() {
            if let (Ok(name), Some(Ok(value))) =
                (k.parse::<axum::http::HeaderName>(), v.as_str().map(HeaderValue::from_str))
            {
                headers.append(name, value);
            }
        }
    }
    for cookie in payload.get("cookies").and_then(Value::as_array).into_iter().flatten() {
        if let Some(Ok(value)) = cookie.as_str().map(HeaderValue::from_str) {
            headers.append("set-cookie", value);
        }
    }
    response
}

fn plain(status: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn dev_identity_becomes_claims() {
        let c = dev_claims(&headers("Bearer dev:alice")).unwrap();
        assert_eq!(c["sub"], "alice");
        assert!(c.get("scope").is_none());
        let admin = dev_claims(&headers("Bearer dev:root@example.com:admin")).unwrap();
        assert_eq!(admin["scope"], "admin");
        assert_eq!(admin["email"], "root@example.com");
    }

    #[test]
    fn malformed_identity_is_refused() {
        for bad in
            ["", "Bearer", "Bearer dev:", "Basic dev:alice", "Bearer alice", "Bearer dev:alice:root", "Bearer dev:a b"]
        {
            assert!(dev_claims(&headers(bad)).is_none(), "{bad}");
        }
        assert!(dev_claims(&HeaderMap::new()).is_none());
    }
}
