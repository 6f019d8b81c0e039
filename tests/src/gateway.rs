//! The local gateway: plays API Gateway's HTTP API in front of the functions.
//!
//! Routes come from the template. For routes behind the JWT authorizer it turns
//! `Authorization: Bearer dev:<user_id>` (or `dev:<user_id>:admin`) into the claims the real
//! authorizer would pass, and answers 401 itself for a missing or malformed header, as API
//! Gateway does. It then invokes the function through cargo lambda's Lambda Invoke API with a
//! payload-format-2.0 event and translates the function's response back to HTTP.
//!
//! It is served by hyper (HTTP/1.1, a task per connection, keep-alive), which answers a
//! malformed request (a raw path byte outside ASCII, oversized headers) with a 4xx as API
//! Gateway does, never a dropped connection; header values that are not ASCII are passed on
//! (lossily) to the function, which decides. hyper's server features are enabled for every
//! function too (see `shared/Cargo.toml`), so the workspace build and cargo lambda's
//! per-function builds resolve the same features.

use crate::template::Route;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// API Gateway's own payload limit.
const MAX_BODY: u64 = 10 * 1024 * 1024;

pub struct GatewayState {
    /// (route, binary of the function serving it).
    pub routes: Vec<(Route, String)>,
    /// Base URL of cargo lambda's invoke server.
    pub invoke_url: String,
    pub emulator: String,
    pub http: reqwest::Client,
    pub ready: AtomicBool,
    pub requests: AtomicU64,
    /// Tokens of the local OpenID Connect issuer, checked as API Gateway's JWT authorizer would.
    pub oidc: Option<crate::oidc::Verifier>,
    /// Whether `dev:` tokens are accepted (not in a stack started for the deployed sign-in,
    /// which then takes only the issuer's tokens, as a deployment would).
    pub dev_tokens: bool,
}

/// What the gateway answers: status, headers, body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A request as the gateway sees it.
pub struct Incoming {
    pub method: String,
    /// Path and query, as sent.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Serves on `listener` until the returned task is aborted: a task per connection.
pub fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<GatewayState>,
    runtime: &tokio::runtime::Handle,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, say: wait a little instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, std::convert::Infallible>(answer(&state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
                    .max_buf_size(MAX_HEADER_BYTES)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The most a request's head may take (API Gateway refuses larger ones too).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// One request, read (bounded) and answered.
async fn answer(
    state: &GatewayState,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let reply = match http_body_util::Limited::new(body, MAX_BODY as usize).collect().await {
        Err(_) => plain(413, json!({"message": "Request Entity Too Large"})),
        Ok(collected) => {
            let incoming = Incoming {
                method: parts.method.as_str().to_ascii_uppercase(),
                url: parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
                body: collected.to_bytes().to_vec(),
            };
            handle(state, incoming).await
        }
    };
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) =
            (hyper::header::HeaderName::from_bytes(name.as_bytes()), hyper::header::HeaderValue::from_str(&value))
        {
            response.headers_mut().append(n, v);
        }
    }
    response
}

pub async fn handle(state: &GatewayState, req: Incoming) -> Reply {
    match req.url.split_once('?').map_or(req.url.as_str(), |(path, _)| path) {
        "/health" => return health(state),
        "/_local/outbox" => return outbox(state).await,
        _ => {}
    }
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    let oidc = state.oidc.as_ref();
    match route_event(&state.routes, &req, n, oidc, state.dev_tokens) {
        Ok((binary, event)) => invoke(state, &binary, &event).await,
        Err(reply) => reply,
    }
}

/// The function API Gateway invokes for `req` and the payload-format-2.0 event it sends
/// (`n` numbers the request), or what it answers on its own: 404 for no route, 401 for a
/// missing or malformed identity.
pub fn route_event(
    routes: &[(Route, String)],
    req: &Incoming,
    n: u64,
    oidc: Option<&crate::oidc::Verifier>,
    dev_tokens: bool,
) -> Result<(String, Value), Reply> {
    let (path, query) = req.url.split_once('?').unwrap_or((req.url.as_str(), ""));
    let Some((route, binary, params)) =
        routes.iter().find_map(|(r, b)| r.matches(&req.method, path).map(|p| (r, b, p)))
    else {
        return Err(plain(404, json!({"message": "Not Found"})));
    };
    let claims = if route.public {
        None
    } else {
        let authorization = header(&req.headers, "authorization");
        let dev = if dev_tokens { dev_claims(authorization) } else { None };
        match dev.or_else(|| oidc.and_then(|v| v.claims(authorization))) {
            Some(c) => Some(c),
            None => return Err(plain(401, json!({"message": "Unauthorized"}))),
        }
    };
    Ok((binary.clone(), api_event(req, path, query, route, &params, claims, n)))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn health(state: &GatewayState) -> Reply {
    if state.ready.load(Ordering::Acquire) {
        plain(200, json!({"status": "ok", "emulator": state.emulator, "functions": state.invoke_url}))
    } else {
        plain(503, json!({"status": "starting"}))
    }
}

async fn outbox(state: &GatewayState) -> Reply {
    match crate::outbox::read(&state.http, &state.emulator).await {
        Ok(messages) => plain(200, json!({ "messages": messages })),
        Err(e) => plain(502, json!({"message": format!("{e:#}")})),
    }
}

/// `Bearer dev:<user>` or `Bearer dev:<user>:admin` → JWT claims; anything else → `None`.
pub fn dev_claims(authorization: Option<&str>) -> Option<Map<String, Value>> {
    let value = authorization?;
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

/// Joins repeated keys with commas, as API Gateway does for headers and query parameters.
fn joined<'a>(pairs: impl Iterator<Item = (String, String)> + 'a) -> Map<String, Value> {
    let mut map = Map::new();
    for (k, v) in pairs {
        match map.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                map.insert(k, json!(v));
            }
        }
    }
    map
}

fn api_event(
    req: &Incoming,
    path: &str,
    raw_query: &str,
    route: &Route,
    params: &[(String, String)],
    claims: Option<Map<String, Value>>,
    n: u64,
) -> Value {
    let headers = joined(req.headers.iter().cloned());
    let query =
        joined(url::form_urlencoded::parse(raw_query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())));
    let route_key = format!("{} {}", route.method, route.path);
    let now = chrono::Utc::now();
    let (body_text, is_b64) = match std::str::from_utf8(&req.body) {
        Ok(s) => (s.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(&req.body), true),
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {"method": req.method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": header(&req.headers, "user-agent").unwrap_or_default()},
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
    if !req.body.is_empty() {
        event["body"] = json!(body_text);
    }
    if let Some(claims) = claims {
        event["requestContext"]["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }
    event
}

async fn invoke(state: &GatewayState, binary: &str, event: &Value) -> Reply {
    let url = format!("{}/2015-03-31/functions/{binary}/invocations", state.invoke_url);
    // While cargo lambda restarts after a crash, the invoke port refuses connections for a
    // moment; Lambda itself would just start a new environment.
    let mut result = state.http.post(&url).json(event).send().await;
    for _ in 0..100 {
        match &result {
            Err(e) if e.is_connect() => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                result = state.http.post(&url).json(event).send().await;
            }
            _ => break,
        }
    }
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, binary, "invoking the function failed");
            return plain(500, json!({"message": "Internal Server Error"}));
        }
    };
    let function_error = response.headers().contains_key("x-amz-function-error");
    let payload: Value = match response.json().await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, binary, "the function's response is not JSON");
            return plain(500, json!({"message": "Internal Server Error"}));
        }
    };
    if function_error || payload.get("errorType").is_some() || payload.get("statusCode").is_none() {
        tracing::error!(binary, payload = %payload, "the function failed");
        return plain(500, json!({"message": "Internal Server Error"}));
    }
    to_reply(&payload)
}

fn to_reply(payload: &Value) -> Reply {
    let status = payload.get("statusCode").and_then(Value::as_u64).map_or(200, |s| s as u16);
    let body = payload.get("body").and_then(Value::as_str).unwrap_or_default();
    let body = if payload.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        base64::engine::general_purpose::STANDARD.decode(body).unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    let mut headers = Vec::new();
    for (k, v) in payload.get("headers").and_then(Value::as_object).into_iter().flatten() {
        if let Some(v) = v.as_str() {
            headers.push((k.clone(), v.to_owned()));
        }
    }
    for (k, values) in payload.get("multiValueHeaders").and_then(Value::as_object).into_iter().flatten() {
        for v in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !headers.iter().any(|(name, value)| name == k && value == v) {
                headers.push((k.clone(), v.to_owned()));
            }
        }
    }
    for cookie in payload.get("cookies").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        headers.push(("set-cookie".into(), cookie.to_owned()));
    }
    Reply { status, headers, body }
}

fn plain(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_identity_becomes_claims() {
        let c = dev_claims(Some("Bearer dev:alice")).unwrap();
        assert_eq!(c["sub"], "alice");
        assert!(c.get("scope").is_none());
        let admin = dev_claims(Some("Bearer dev:root@example.com:admin")).unwrap();
        assert_eq!(admin["scope"], "admin");
        assert_eq!(admin["email"], "root@example.com");
    }

    #[test]
    fn malformed_identity_is_refused() {
        for bad in
            ["", "Bearer", "Bearer dev:", "Basic dev:alice", "Bearer alice", "Bearer dev:alice:root", "Bearer dev:a b"]
        {
            assert!(dev_claims(Some(bad)).is_none(), "{bad}");
        }
        assert!(dev_claims(None).is_none());
    }

    #[test]
    fn repeated_query_keys_are_joined() {
        let m = joined(vec![("a".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())].into_iter());
        assert_eq!(m["a"], "1,2");
    }
}
