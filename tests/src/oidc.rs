//! A local OpenID Connect issuer for the console's deployed sign-in, and the check the local
//! gateway makes of its tokens in place of API Gateway's JWT authorizer: authorization code with
//! PKCE (S256 only), a login form instead of a real account, ID tokens signed HS256 with a key
//! made for this stack (the gateway verifies signature, issuer, audience and expiry).
//!
//! Served by the fakes under `/oidc/…`: `GET authorize` (the login form), `POST authorize`
//! (redirects back with a code), `POST token` (code + verifier → tokens, with CORS for the
//! console's origin).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The console's client id at the local issuer.
pub const CLIENT_ID: &str = "actiongate-console";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// How long a code may wait to be redeemed, and how many may wait at once.
const CODE_LIFETIME_SECS: i64 = 300;
const MAX_CODES: usize = 1000;

/// The issuer's settings and the codes it has handed out but not yet redeemed.
pub struct Issuer {
    /// Where the issuer lives (`<fakes>/oidc`): the tokens' `iss`.
    pub url: String,
    /// Where sign-in may return to (the gateway's `/console`).
    pub redirect_uri: String,
    key: Vec<u8>,
    codes: BTreeMap<String, Grant>,
}

struct Grant {
    issued: i64,
    challenge: String,
    user: String,
    admin: bool,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("url", &self.url).field("codes", &self.codes.len()).finish()
    }
}

/// What the gateway needs to check a token: the key, the issuer and the audience.
#[derive(Clone)]
pub struct Verifier {
    key: Vec<u8>,
    issuer: String,
}

impl Default for Issuer {
    /// An issuer nobody can sign in with until the stack sets it up (no redirect URI), whose
    /// key is random all the same: an empty key would sign what anyone could forge.
    fn default() -> Self {
        Self::new(String::new(), String::new())
    }
}

impl Issuer {
    pub fn new(url: String, redirect_uri: String) -> Self {
        let mut key = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
        Self { url, redirect_uri, key, codes: BTreeMap::new() }
    }

    pub fn verifier(&self) -> Verifier {
        Verifier { key: self.key.clone(), issuer: self.url.clone() }
    }

    fn sign(&self, claims: &Value) -> String {
        let head = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = b64(claims.to_string().as_bytes());
        let signing_input = format!("{head}.{body}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works for HMAC");
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
    }

    /// `/oidc/<rest>`: (status, headers, body, content type).
    pub fn route(
        &mut self,
        method: &str,
        rest: &[&str],
        query: &str,
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, String) {
        let form: BTreeMap<String, String> =
            url::form_urlencoded::parse(if method == "GET" { query.as_bytes() } else { body }).into_owned().collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        let html = |status: u16, text: String| {
            (status, vec![("content-type".to_owned(), "text/html; charset=utf-8".to_owned())], text)
        };
        if self.redirect_uri.is_empty() {
            return html(503, "<p>The local issuer is not set up.</p>".into());
        }
        let challenge_ok =
            |c: &str| c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        match (method, rest) {
            ("GET", ["authorize"]) => {
                if get("client_id") != CLIENT_ID
                    || get("redirect_uri") != self.redirect_uri
                    || get("response_type") != "code"
                {
                    return html(400, "<p>Unknown client or redirect URI.</p>".into());
                }
                if get("code_challenge_method") != "S256" || !challenge_ok(get("code_challenge")) {
                    return html(400, "<p>PKCE with S256 is required.</p>".into());
                }
                // The login form carries the request on (values escaped as attribute text).
                let hidden: String = ["state", "code_challenge", "redirect_uri"]
                    .iter()
                    .map(|k| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", escape(get(k))))
                    .collect();
                html(
                    200,
                    format!(
                        "<!doctype html><title>Local identity provider</title><h1>Local identity provider</h1>\
                         <form method=\"post\">{hidden}<label>Email <input name=\"email\"></label>\
                         <label><input type=\"checkbox\" name=\"admin\"> admin group</label><button>Continue</button></form>"
                    ),
                )
            }
            ("POST", ["authorize"]) => {
                let email = get("email").trim().to_owned();
                // What the gateway's user ids allow: an address without spaces or controls.
                let plain = !email.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#');
                if !email.contains('@') || email.len() > 128 || !plain {
                    return html(400, "<p>An email address is needed.</p>".into());
                }
                if get("redirect_uri") != self.redirect_uri || !challenge_ok(get("code_challenge")) {
                    return html(400, "<p>Unknown redirect URI, or PKCE missing.</p>".into());
                }
                let now = chrono::Utc::now().timestamp();
                self.codes.retain(|_, g| now - g.issued < CODE_LIFETIME_SECS);
                if self.codes.len() >= MAX_CODES {
                    return html(503, "<p>Too many sign-ins at once; try again.</p>".into());
                }
                let mut code = [0u8; 24];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut code);
                let code = b64(&code);
                self.codes.insert(
                    code.clone(),
                    Grant {
                        issued: now,
                        challenge: get("code_challenge").to_owned(),
                        user: email,
                        admin: form.contains_key("admin"),
                    },
                );
                let location = format!(
                    "{}?{}",
                    self.redirect_uri,
                    url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("code", &code)
                        .append_pair("state", get("state"))
                        .finish()
                );
                (302, vec![("location".to_owned(), location)], String::new())
            }
            ("POST", ["token"]) => {
                let cors = vec![
                    ("access-control-allow-origin".to_owned(), origin(&self.redirect_uri)),
                    ("content-type".to_owned(), "application/json".to_owned()),
                ];
                // A code works once, for the verifier whose hash it was issued with.
                let now = chrono::Utc::now().timestamp();
                let grant = match self.codes.remove(get("code")) {
                    Some(g)
                        if get("grant_type") == "authorization_code"
                            && get("client_id") == CLIENT_ID
                            && get("redirect_uri") == self.redirect_uri
                            && now - g.issued < CODE_LIFETIME_SECS =>
                    {
                        g
                    }
                    _ => return (400, cors, json!({"error": "invalid_grant"}).to_string()),
                };
                if b64(&Sha256::digest(get("code_verifier").as_bytes())) != grant.challenge {
                    return (400, cors, json!({"error": "invalid_grant", "error_description": "PKCE"}).to_string());
                }
                let mut claims = json!({"iss": self.url, "aud": CLIENT_ID, "sub": grant.user, "email": grant.user, "iat": now, "exp": now + 3600});
                if grant.admin {
                    claims["groups"] = json!(["admin"]);
                }
                let token = self.sign(&claims);
                (
                    200,
                    cors,
                    json!({"id_token": token, "access_token": token, "token_type": "Bearer", "expires_in": 3600})
                        .to_string(),
                )
            }
            _ => (404, vec![], String::new()),
        }
    }
}

impl Verifier {
    /// The claims of a `Bearer <JWT>` this issuer signed for the console, still valid; what
    /// API Gateway's JWT authorizer checks (signature, issuer, audience, expiry).
    pub fn claims(&self, authorization: Option<&str>) -> Option<Map<String, Value>> {
        if self.key.is_empty() || self.issuer.is_empty() {
            return None;
        }
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        let mut parts = token.split('.');
        let (head, body, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        mac.update(format!("{head}.{body}").as_bytes());
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).ok()?;
        mac.verify_slice(&sig).ok()?;
        let header: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).ok()?).ok()?;
        if header["alg"] != "HS256" {
            return None;
        }
        let claims: Map<String, Value> =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        let fresh = claims.get("exp").and_then(Value::as_i64).is_some_and(|exp| exp > chrono::Utc::now().timestamp());
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str())
            || claims.get("aud").and_then(Value::as_str) != Some(CLIENT_ID)
            || !fresh
        {
            return None;
        }
        // As API Gateway passes them to the function: a list as one bracketed string.
        let mut out = Map::new();
        for (k, v) in claims {
            let text = match v {
                Value::Array(items) => {
                    format!("[{}]", items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
                }
                Value::String(s) => s,
                other => other.to_string(),
            };
            out.insert(k, Value::String(text));
        }
        Some(out)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `http://host:port` of a URL.
fn origin(u: &str) -> String {
    url::Url::parse(u).map(|u| u.origin().ascii_serialization()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_flow_with_pkce_gives_a_token_the_gateway_accepts_once() {
        let mut issuer = Issuer::new("http://127.0.0.1:1/oidc".into(), "http://127.0.0.1:2/console".into());
        let verifier = "v".repeat(43);
        let challenge = b64(&Sha256::digest(verifier.as_bytes()));
        let q = format!("response_type=code&client_id={CLIENT_ID}&redirect_uri=http%3A%2F%2F127.0.0.1%3A2%2Fconsole&state=s1&code_challenge={challenge}&code_challenge_method=S256");
        assert_eq!(issuer.route("GET", &["authorize"], &q, b"").0, 200);
        let form = format!("email=ops%40example.com&admin=on&state=s1&code_challenge={challenge}&redirect_uri=http%3A%2F%2F127.0.0.1%3A2%2Fconsole");
        let (status, headers, _) = issuer.route("POST", &["authorize"], "", form.as_bytes());
        assert_eq!(status, 302);
        let location = &headers[0].1;
        assert!(location.starts_with("http://127.0.0.1:2/console?code=") && location.ends_with("&state=s1"));
        let code = location.split("code=").nth(1).unwrap().split('&').next().unwrap().to_owned();
        let wrong = format!("grant_type=authorization_code&client_id={CLIENT_ID}&code={code}&code_verifier=nope&redirect_uri=http%3A%2F%2F127.0.0.1%3A2%2Fconsole");
        assert_eq!(issuer.route("POST", &["token"], "", wrong.as_bytes()).0, 400, "the verifier must match");
        let (_, _, again) = issuer.route("POST", &["token"], "", wrong.as_bytes());
        assert!(again.contains("invalid_grant"), "a code is spent by any try");
        // A fresh code, redeemed properly.
        let (_, headers, _) = issuer.route("POST", &["authorize"], "", form.as_bytes());
        let code = headers[0].1.split("code=").nth(1).unwrap().split('&').next().unwrap().to_owned();
        let good = format!("grant_type=authorization_code&client_id={CLIENT_ID}&code={code}&code_verifier={verifier}&redirect_uri=http%3A%2F%2F127.0.0.1%3A2%2Fconsole");
        let (status, headers, body) = issuer.route("POST", &["token"], "", good.as_bytes());
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers[0], ("access-control-allow-origin".to_owned(), "http://127.0.0.1:2".to_owned()));
        let token: Value = serde_json::from_str(&body).unwrap();
        let id_token = token["id_token"].as_str().unwrap();
        let claims = issuer.verifier().claims(Some(&format!("Bearer {id_token}"))).unwrap();
        assert_eq!(claims["email"], "ops@example.com");
        assert_eq!(claims["groups"], "[admin]");
        // Tampered or foreign tokens are refused.
        let mut forged = id_token.to_owned();
        forged.pop();
        assert!(issuer.verifier().claims(Some(&format!("Bearer {forged}x"))).is_none());
        let other = Issuer::new("http://127.0.0.1:1/oidc".into(), "http://127.0.0.1:2/console".into());
        assert!(other.verifier().claims(Some(&format!("Bearer {id_token}"))).is_none(), "another key");
        assert!(issuer.verifier().claims(Some("Bearer dev:alice")).is_none());
        // What the authorizer refuses: no signature ("none"), another issuer or audience, expired.
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), id_token.split('.').nth(1).unwrap());
        assert!(issuer.verifier().claims(Some(&format!("Bearer {none}"))).is_none());
        let now = chrono::Utc::now().timestamp();
        for claims in [
            json!({"iss": "http://elsewhere/oidc", "aud": CLIENT_ID, "sub": "a@x.com", "exp": now + 60}),
            json!({"iss": issuer.url, "aud": "another-client", "sub": "a@x.com", "exp": now + 60}),
            json!({"iss": issuer.url, "aud": CLIENT_ID, "sub": "a@x.com", "exp": now - 1}),
            json!({"iss": issuer.url, "aud": CLIENT_ID, "sub": "a@x.com"}),
        ] {
            let token = issuer.sign(&claims);
            assert!(issuer.verifier().claims(Some(&format!("Bearer {token}"))).is_none(), "{claims}");
        }
        // An issuer the stack has not set up signs nobody in, and an empty verifier trusts nothing.
        let mut unset = Issuer::default();
        assert_eq!(unset.route("GET", &["authorize"], &q, b"").0, 503);
        let empty = Verifier { key: Vec::new(), issuer: String::new() };
        assert!(empty.claims(Some(&format!("Bearer {id_token}"))).is_none());
    }
}
