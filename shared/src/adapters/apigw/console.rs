//! The operator console's static files (`/console/…`), compiled into the approval function:
//! the page, its script and stylesheet, the vendored uPlot, and `config.json` saying how to
//! sign in. The files hold no data; everything the console shows comes from the JSON API,
//! called with the signed-in person's bearer token. Served with a strict CSP: scripts and
//! styles from this origin only, no inline script, no frames, no other origin but the identity
//! provider's token endpoint.

use lambda_http::{Body, Response};

const INDEX: &str = include_str!("../../../../console/index.html");
const APP_JS: &str = include_str!("../../../../console/app.js");
const APP_CSS: &str = include_str!("../../../../console/app.css");
const UPLOT_JS: &str = include_str!("../../../../console/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../../../console/vendor/uPlot.min.css");

/// How the console signs people in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// The local stack's form: `user` and `admin` become the development identity, which only
    /// the local gateway accepts (API Gateway's JWT authorizer refuses it).
    Dev,
    /// OpenID Connect authorization code with PKCE against the issuer the API trusts.
    Oidc { client_id: String, authorize_url: String, token_url: String },
}

/// The console: its sign-in settings, and the headers every file is served with.
pub struct Console {
    config_json: String,
    csp: String,
}

/// The origin (`https://host[:port]`) of `url`, if it is an http(s) URL.
fn origin(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    matches!(parsed.scheme(), "https" | "http").then(|| parsed.origin().ascii_serialization())
}

impl Console {
    pub fn new(sign_in: SignIn) -> Self {
        let (config, token_origin) = match &sign_in {
            SignIn::Dev => (serde_json::json!({"sign_in": "dev"}), None),
            SignIn::Oidc { client_id, authorize_url, token_url } => (
                serde_json::json!({"sign_in": "oidc", "oidc": {
                    "client_id": client_id, "authorize_url": authorize_url, "token_url": token_url,
                    "scope": "openid email profile",
                }}),
                origin(token_url),
            ),
        };
        let connect = match token_origin {
            Some(o) => format!("'self' {o}"),
            None => "'self'".to_owned(),
        };
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src {connect}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        Self { config_json: config.to_string(), csp }
    }

    /// The file at `/console/<rest…>` (the page itself for `/console` and `/console/`).
    pub fn serve(&self, rest: &[&str]) -> Response<Body> {
        let file: Option<(&str, &str, &str)> = match rest {
            [] | ["index.html"] => Some((INDEX, "text/html; charset=utf-8", "no-cache")),
            ["app.js"] => Some((APP_JS, "text/javascript; charset=utf-8", "no-cache")),
            ["app.css"] => Some((APP_CSS, "text/css; charset=utf-8", "no-cache")),
            ["vendor", "uPlot.iife.min.js"] => {
                Some((UPLOT_JS, "text/javascript; charset=utf-8", "public, max-age=86400"))
            }
            ["vendor", "uPlot.min.css"] => Some((UPLOT_CSS, "text/css; charset=utf-8", "public, max-age=86400")),
            ["config.json"] => Some((self.config_json.as_str(), "application/json", "no-store")),
            _ => None,
        };
        let (status, (body, content_type, cache)) = match file {
            Some(f) => (http::StatusCode::OK, f),
            None => (
                http::StatusCode::NOT_FOUND,
                (r#"{"error":"not_found","message":"no such console file"}"#, "application/json", "no-store"),
            ),
        };
        let mut response = Response::new(Body::Text(body.to_owned()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        let pairs: [(&str, &str); 7] = [
            ("content-type", content_type),
            ("cache-control", cache),
            ("content-security-policy", &self.csp),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("x-robots-tag", "noindex, nofollow"),
        ];
        for (name, value) in pairs {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Response<Body>) -> &str {
        std::str::from_utf8(r.body().as_ref()).unwrap()
    }

    #[test]
    fn files_carry_a_strict_csp_and_the_page_has_no_inline_script() {
        let console = Console::new(SignIn::Dev);
        let page = console.serve(&[]);
        assert_eq!(page.status(), 200);
        let csp = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe"), "{csp}");
        let html = text(&page);
        // Every <script> has a src: nothing inline.
        assert_eq!(html.matches("<script").count(), html.matches("<script src=\"/console/").count());
        assert!(!html.contains("style="), "no inline style");
        assert!(
            ["onclick=", "onload=", "onerror=", "onsubmit="].iter().all(|h| !html.contains(h)),
            "no inline handler"
        );
        assert!(!text(&console.serve(&["app.js"])).contains("localStorage.setItem"), "the token is never stored");
        assert_eq!(console.serve(&["nope.js"]).status(), 404);
        assert_eq!(console.serve(&["..", "Cargo.toml"]).status(), 404);
        assert_eq!(text(&console.serve(&["config.json"])), r#"{"sign_in":"dev"}"#);
    }

    #[test]
    fn oidc_sign_in_names_the_issuer_endpoints_and_allows_only_its_token_origin() {
        let console = Console::new(SignIn::Oidc {
            client_id: "abc".into(),
            authorize_url: "https://login.example.com/oauth2/authorize".into(),
            token_url: "https://login.example.com/oauth2/token".into(),
        });
        let config: serde_json::Value = serde_json::from_str(text(&console.serve(&["config.json"]))).unwrap();
        assert_eq!(config["sign_in"], "oidc");
        assert_eq!(config["oidc"]["client_id"], "abc");
        let csp = console.serve(&["app.js"]).headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("connect-src 'self' https://login.example.com;"), "{csp}");
    }
}
