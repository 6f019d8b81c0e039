//! `http_request` (webhooks) with an SSRF guard. Private, loopback, link-local and other
//! non-public addresses are refused unless allowlisted, at every connection (a DNS resolver
//! that filters addresses, so a name cannot be re-pointed between check and use) and at every
//! redirect. Timeouts and a response size cap bound each call. The side effect carries an
//! `Idempotency-Key` header; an optional `rollback` request is the compensation.

use super::{read_capped, GuardedHttp, Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Largest response body kept.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const MAX_REDIRECTS: usize = 3;

/// Hosts and addresses that may be reached even though they are not public.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    hosts: Vec<String>,
    ips: Vec<IpAddr>,
}

impl Allowlist {
    /// Comma-separated host names and IP addresses (`WEBHOOK_ALLOWLIST`).
    pub fn parse(list: &str) -> Self {
        let mut allow = Self::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.parse::<IpAddr>() {
                Ok(ip) => allow.ips.push(ip),
                Err(_) => allow.hosts.push(entry.to_ascii_lowercase()),
            }
        }
        allow
    }

    fn host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    pub fn ip(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip) || is_public(ip)
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0];
            if nat64 {
                return is_public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240)
}

/// Resolves names, keeping only addresses the allowlist permits.
struct GuardedResolver {
    allow: Arc<Allowlist>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = Arc::clone(&self.allow);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> =
                if allow.host(&host) { addrs } else { addrs.into_iter().filter(|a| allow.ip(a.ip())).collect() };
            if permitted.is_empty() {
                return Err(format!(
                    "{host} resolves only to addresses that are not allowed (private, loopback or link-local)"
                )
                .into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks URLs and builds the HTTP client that enforces the allowlist on every connection.
#[derive(Clone)]
pub struct AddressGuard {
    allow: Arc<Allowlist>,
    client: reqwest::Client,
    /// The same guard, following no redirect (connectors).
    direct: reqwest::Client,
}

impl std::fmt::Debug for AddressGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressGuard").field("allow", &self.allow).finish()
    }
}

impl AddressGuard {
    /// Fails only if the HTTP client cannot be built; never falls back to a client without the
    /// guarded resolver.
    pub fn new(allow: Allowlist) -> Result<Self, reqwest::Error> {
        let allow = Arc::new(allow);
        let redirect_allow = Arc::clone(&allow);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allow: Arc::clone(&allow) }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error("too many redirects");
                }
                match check_url(&redirect_allow, attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e.message),
                }
            }))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let direct = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allow: Arc::clone(&allow) }))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self { allow, client, direct })
    }
}

impl GuardedHttp for AddressGuard {
    fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn client_without_redirects(&self) -> &reqwest::Client {
        &self.direct
    }

    fn check(&self, url: &url::Url) -> Result<(), HandlerError> {
        check_url(&self.allow, url)
    }
}

/// The checks that need no DNS: scheme, and literal addresses (which bypass the resolver).
fn check_url(allow: &Allowlist, url: &url::Url) -> Result<(), HandlerError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HandlerError::permanent("address_refused", format!("{} is not an http(s) URL", url.scheme())));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => d.parse::<IpAddr>().ok(),
        None => return Err(HandlerError::permanent("address_refused", "the URL has no host")),
    };
    if let Some(ip) = literal {
        if !allow.ip(ip) {
            return Err(HandlerError::permanent(
                "address_refused",
                format!("{ip} is not a public address and is not allowlisted"),
            ));
        }
    }
    Ok(())
}

pub struct HttpRequest;

/// Sends one request described by `spec` (`method`, `url`, `headers?`, `body?`, `timeout_ms?`).
async fn send(ctx: &StepContext<'_>, spec: &Value, idempotency_key: &str) -> Result<Value, HandlerError> {
    let guard = &ctx.deps.guard;
    let raw = spec
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| HandlerError::permanent("invalid_payload", "url is missing"))?;
    let url = url::Url::parse(raw).map_err(|e| HandlerError::permanent("invalid_payload", format!("url: {e}")))?;
    guard.check(&url)?;
    let method = spec.get("method").and_then(Value::as_str).unwrap_or("POST");
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| HandlerError::permanent("invalid_payload", "method"))?;
    let timeout = spec.get("timeout_ms").and_then(Value::as_u64).unwrap_or(DEFAULT_TIMEOUT_MS);
    let mut request = guard
        .client()
        .request(method, url.clone())
        .timeout(Duration::from_millis(timeout))
        .header("Idempotency-Key", idempotency_key);
    for (name, value) in spec.get("headers").and_then(Value::as_object).into_iter().flatten() {
        if let Some(v) = value.as_str() {
            request = request.header(name.as_str(), v);
        }
    }
    match spec.get("body") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => request = request.body(s.clone()),
        Some(other) => request = request.json(other),
    }
    let response = request.send().await.map_err(|e| HandlerError::from_reqwest(&e, &format!("{url}")))?;
    let status = response.status().as_u16();
    let (body, truncated) = read_capped(response, MAX_RESPONSE_BYTES, url.as_str()).await?;
    let text = String::from_utf8_lossy(&body);
    if !(200..300).contains(&status) {
        return Err(HandlerError::from_status(status, url.as_str(), &text));
    }
    let shown: String = text.chars().take(4096).collect();
    let body_value = stored_body(shown);
    Ok(json!({"status": status, "body": body_value, "truncated": truncated || body.len() > 4096}))
}

/// A response body as the step keeps it: JSON when it is JSON of bounded depth, the text
/// otherwise (a deeply nested answer must not make the stored action unreadable).
fn stored_body(text: String) -> Value {
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if crate::validation::json_depth(&v) <= crate::validation::MAX_PAYLOAD_DEPTH => v,
        _ => Value::String(text),
    }
}

impl Handler for HttpRequest {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        crate::validation::validate_payload("http_request", payload, "payload")
            .map_err(|e| HandlerError::permanent("invalid_payload", e.to_string()))
    }

    fn preview(&self, payload: &Value) -> String {
        crate::domain::catalog::describe("http_request", payload)
    }

    fn reversibility(&self, payload: &Value) -> Reversibility {
        if payload.get("rollback").is_some_and(|r| !r.is_null()) {
            Reversibility::Reversible
        } else {
            Reversibility::Irreversible
        }
    }

    fn idempotent(&self) -> bool {
        // The request carries an Idempotency-Key; targets that honour it make a retry safe.
        true
    }

    /// One breaker per host the requests go to.
    fn integration(&self, payload: &Value) -> Option<String> {
        let url = url::Url::parse(payload.get("url")?.as_str()?).ok()?;
        let host = url.host_str()?.to_ascii_lowercase();
        Some(match url.port() {
            Some(port) => format!("webhook:{host}:{port}"),
            None => format!("webhook:{host}"),
        })
    }

    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move { send(ctx, ctx.payload, &ctx.idempotency_key).await })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
        _: &'a Value,
        _: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let spec = ctx.payload.get("rollback").filter(|r| !r.is_null()).ok_or_else(|| {
                HandlerError::permanent("not_reversible", "the request has no compensating rollback request")
            })?;
            send(ctx, spec, &format!("{}-rollback", ctx.idempotency_key)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deeply_nested_response_is_kept_as_text() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(stored_body(deep.clone()), Value::String(deep));
        assert_eq!(stored_body("{\"ok\":[1]}".into()), json!({"ok": [1]}));
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_private_urls_are_refused_unless_allowlisted() {
        let strict = Allowlist::parse("");
        for url in
            ["http://127.0.0.1/x", "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/", "http://10.0.0.5/"]
        {
            assert!(check_url(&strict, &url::Url::parse(url).unwrap()).is_err(), "{url}");
        }
        assert!(check_url(&strict, &url::Url::parse("https://hooks.example.com/x").unwrap()).is_ok());
        let local = Allowlist::parse("127.0.0.1, localhost");
        assert!(check_url(&local, &url::Url::parse("http://127.0.0.1:9999/hook").unwrap()).is_ok());
        assert!(check_url(&local, &url::Url::parse("http://10.0.0.5/").unwrap()).is_err());
        assert!(local.host("LOCALHOST"));
    }
}
