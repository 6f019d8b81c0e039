//! An outside check of the whole REST API: schemathesis (pinned in requirements-dev.txt)
//! fuzzes the local stack from its OpenAPI document, with a dev token, bounded in examples and
//! time, and must find nothing: no server error, every status and content type documented, every
//! body matching its schema.

mod common;

use std::process::Command;

#[tokio::test]
async fn schemathesis_finds_no_server_error_or_contract_breach() {
    let api = common::api();
    let gateway = api.stack.gateway_url.clone();
    let root = actiongate_local::workspace_root();
    let report = root.join("target/schemathesis");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(root.join(".venv/bin/schemathesis"))
            .args(["run", &format!("{gateway}/openapi.json"), "--url", &gateway])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--header", "Authorization: Bearer dev:fuzzer"])
            .args(["--max-examples", "12", "--max-time", "150", "--workers", "2", "--seed", "7"])
            .args(["--request-timeout", "30", "--phases", "examples,coverage,fuzzing"])
            .args(["--suppress-health-check", "all", "--no-shrink", "--warnings", "off"])
            .args(["--report", "junit", "--report-dir"])
            .arg(&report)
            .env("NO_COLOR", "1")
            .output()
            .expect("schemathesis runs (make setup installs it)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found problems:\n{stdout}\n{stderr}");
}
