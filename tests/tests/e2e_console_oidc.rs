//! The console's deployed sign-in, in a real browser: OpenID Connect authorization code with
//! PKCE against the local issuer in the fakes (`tests/src/oidc.rs`), whose ID tokens the local
//! gateway checks as API Gateway's JWT authorizer would (signature, issuer, audience, expiry).

mod common;

use actiongate_local::stack::shared_with;
use common::{someone, Api};
use std::time::Duration;

#[tokio::test]
async fn the_console_signs_in_through_the_identity_provider_with_pkce() {
    let api = Api { stack: shared_with(&[("CONSOLE_SIGN_IN", "oidc")]), http: reqwest::Client::new() };
    let config = api.call("GET", "/console/config.json", None, None, &[]).await;
    assert_eq!(config.body["sign_in"], "oidc", "{}", config.body);
    assert_eq!(config.body["oidc"]["client_id"], actiongate_local::oidc::CLIENT_ID);
    let root = actiongate_local::workspace_root();
    let out = tokio::process::Command::new("node")
        .arg(root.join("console/tests/oidc.mjs"))
        .current_dir(root.join("console"))
        .env("BASE", &api.stack.gateway_url)
        .env("EMAIL", format!("{}@example.com", someone("lead")))
        .env("SHOTS", root.join("target/console-screenshots"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out).await.expect("the browser run ends in time").unwrap();
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser run failed:\n{said}");
    // A token the issuer did not sign is refused at the gateway, like any other.
    let forged = api
        .http
        .get(format!("{}/stats", api.stack.gateway_url))
        .bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.sig")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    // This stack stands for a deployment: the development identity is refused too.
    let dev =
        api.http.get(format!("{}/stats", api.stack.gateway_url)).bearer_auth("dev:root:admin").send().await.unwrap();
    assert_eq!(dev.status().as_u16(), 401);
}
