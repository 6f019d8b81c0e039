//! The HTML pages behind approval links. No JavaScript; the only active element is a form
//! that POSTs back to the same URL. Every page carries headers that keep it out of caches,
//! referrers, frames and search indexes, and a CSP that allows only its own inline style.

use base64::Engine as _;
use lambda_http::{Body, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

pub use crate::domain::html::escape;

const STYLE: &str = "body{font-family:system-ui,-apple-system,sans-serif;max-width:680px;margin:40px auto;padding:0 16px;color:#1f2328;line-height:1.5}\
h1{font-size:1.5rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}dt{color:#656d76}dd{margin:0}\
pre{background:#f6f8fa;padding:12px;overflow:auto;font-size:13px}textarea{width:100%;min-height:60px;box-sizing:border-box}\
.buttons{display:flex;gap:12px;margin-top:12px}button{font-size:1rem;padding:10px 22px;border-radius:6px;border:1px solid #d0d7de;cursor:pointer}\
.approve{background:#1f883d;color:#fff;border-color:#1a7f37}.reject{background:#fff;color:#cf222e}.note{color:#656d76;font-size:.9rem}";

/// `style-src` allows exactly the stylesheet above, by hash.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

/// A complete page. `body_html` must already be escaped.
pub fn page(status: u16, title: &str, body_html: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex,nofollow\"><meta name=\"referrer\" content=\"no-referrer\"><title>{} · actiongate</title>\
         <style>{STYLE}</style></head><body>{body_html}</body></html>",
        escape(title)
    );
    let mut response = Response::new(Body::Text(html));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let headers = response.headers_mut();
    let pairs: [(&str, &str); 7] = [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-robots-tag", "noindex, nofollow"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("content-security-policy", CSP.as_str()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    response
}

pub fn message(status: u16, title: &str, sentence: &str) -> Response<Body> {
    page(status, title, &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(sentence)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_the_protective_headers() {
        let r = message(410, "Expired", "This link <expired>.");
        assert_eq!(r.status(), 410);
        let h = r.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h["x-robots-tag"].to_str().unwrap().contains("noindex"));
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!csp.contains("script-src"));
        let body = std::str::from_utf8(r.body().as_ref()).unwrap();
        assert!(body.contains("This link &lt;expired&gt;."));
        assert!(!body.contains("<script"));
    }
}
