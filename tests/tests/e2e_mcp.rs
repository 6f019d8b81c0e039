//! The MCP server driven by a client we did not write: the official MCP Python SDK
//! (`tests/mcp/client.py`, pinned in requirements-dev.txt), over stdio (`actiongate-mcp`
//! against the local stack's API) and over Streamable HTTP (`POST /mcp` through the gateway).

mod common;

use common::someone;
use std::process::Command;

/// Runs the Python client's scenario; panics with its output when a check fails.
fn run_client(mode: &str, target: &str, api_url: &str, user: &str, other: &str) {
    let root = actiongate_local::workspace_root();
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/mcp/client.py"))
        .args([mode, target, api_url, &format!("dev:{user}"), &format!("dev:{other}")])
        .output()
        .expect("the Python MCP client runs (make setup installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{mode}: the MCP client failed\n{stdout}\n{stderr}");
    assert!(stdout.contains(r#"{"done": true}"#), "{mode}: {stdout}\n{stderr}");
    let checks = stdout.lines().filter(|l| l.contains(r#""ok": true"#)).count();
    assert!(checks >= 15, "{mode}: only {checks} checks ran\n{stdout}");
}

#[tokio::test]
async fn an_outside_mcp_client_proposes_waits_and_is_refused_over_stdio_and_http() {
    // send_email limited to 3 an hour per user, so a client reaches the limit quickly.
    let api = common::api_with_policy(
        &[(
            r#"rate_limits = [{ window = "hour", limit = 50 }, { window = "day", limit = 500 }]"#,
            r#"rate_limits = [{ window = "hour", limit = 3 }, { window = "day", limit = 500 }]"#,
        )],
        &[],
    );
    let gateway = api.stack.gateway_url.clone();
    let binary = actiongate_local::workspace_root().join("target/debug/actiongate-mcp");
    assert!(binary.exists(), "the workspace build makes actiongate-mcp");
    let (u1, u2) = (someone("agent"), someone("intruder"));
    let binary = binary.to_string_lossy().into_owned();
    let g = gateway.clone();
    tokio::task::spawn_blocking(move || run_client("stdio", &binary, &g, &u1, &u2)).await.unwrap();
    let (u3, u4) = (someone("agent"), someone("intruder"));
    let url = format!("{gateway}/mcp");
    tokio::task::spawn_blocking(move || run_client("http", &url, &gateway, &u3, &u4)).await.unwrap();
}
