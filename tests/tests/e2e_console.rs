//! The operator console in a real browser: headless Debian Chromium, driven by playwright-core
//! (`console/tests/console.mjs`), against this binary's local stack. The test seeds the actions,
//! runs the browser script, and checks through the API what the clicks did.

mod common;

use actiongate_local::stack::shared_with;
use common::{someone, Api, APPROVER};
use serde_json::json;
use std::time::Duration;

fn api() -> Api {
    Api { stack: shared_with(&[]), http: reqwest::Client::new() }
}

async fn wait_for(api: &Api, owner: &str, id: &str, status: &str) {
    let mut last = json!(null);
    for _ in 0..100 {
        last = api.get(&format!("/actions/{id}"), owner).await.body;
        if last["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{id} never became {status}: {last}");
}

#[tokio::test]
async fn an_operator_approves_sees_history_rolls_back_and_flips_the_kill_switch_in_a_browser() {
    let api = api();
    let admin = format!("{}@example.com", someone("root"));
    let admin_token = format!("{admin}:admin");
    let requester = someone("alice");
    // A tier-2 webhook the administrator approves in the queue.
    let hook = format!("{}/hook/console-{}", api.stack.fakes_url, someone("h"));
    let pending = api
        .post(
            "/actions",
            &requester,
            json!({"action_type": "http_request", "payload": {"method": "POST", "url": hook, "body": {"n": 1}}, "approver": APPROVER}),
        )
        .await;
    assert_eq!(pending.status, 201, "{}", pending.body);
    let approve_id = pending.body["action_id"].as_str().unwrap().to_owned();
    // A completed, reversible webhook of the administrator's own, to roll back.
    let target = format!("{}/hook/console-undo-{}", api.stack.fakes_url, someone("u"));
    let own = api
        .post(
            "/actions",
            &admin,
            json!({"action_type": "http_request", "approver": APPROVER, "payload": {"method": "POST", "url": target, "body": {"n": 2},
                "rollback": {"method": "DELETE", "url": target}}}),
        )
        .await;
    assert_eq!(own.status, 201, "{}", own.body);
    let rollback_id = own.body["action_id"].as_str().unwrap().to_owned();
    assert_eq!(api.post(&format!("/actions/{rollback_id}/approve"), APPROVER, json!({})).await.status, 200);
    wait_for(&api, &admin, &rollback_id, "completed").await;
    let policy_before = api.get("/admin/policy", &admin_token).await.body;
    assert_eq!(policy_before["policy"]["auto_execution"]["enabled"], true);

    let root = actiongate_local::workspace_root();
    let shots = root.join("target/console-screenshots");
    let out = tokio::process::Command::new("node")
        .arg(root.join("console/tests/console.mjs"))
        .current_dir(root.join("console"))
        .env("BASE", &api.stack.gateway_url)
        .env("ADMIN", &admin)
        .env("VIEWER", someone("viewer"))
        .env("APPROVE_ID", &approve_id)
        .env("ROLLBACK_ID", &rollback_id)
        .env("SHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), out).await.expect("the browser run ends in time").unwrap();
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser run failed:\n{said}");

    // What the clicks did, through the API: each is an audited call under the operator's name.
    let approved = api.get(&format!("/actions/{approve_id}"), &requester).await.body;
    assert_eq!(approved["status"], "completed", "{approved}");
    assert_eq!(approved["decided_by"], admin.as_str());
    let undone = api.get(&format!("/actions/{rollback_id}"), &admin).await.body;
    assert_eq!(undone["status"], "rolled_back", "{undone}");
    let policy = api.get("/admin/policy", &admin_token).await.body;
    assert_eq!(policy["policy"]["auto_execution"]["enabled"], false, "the kill switch is off");
    assert_eq!(policy["updated_by"], admin.as_str(), "{}", policy["updated_by"]);
    for page in ["sign-in", "queue", "history", "detail", "stats", "settings", "settings-refused", "queue-phone"] {
        assert!(shots.join(format!("{page}.png")).exists(), "no screenshot of {page}");
    }
    // Back as it was, for anyone who runs more against this stack.
    let restored =
        api.call("PUT", "/admin/policy", Some(&admin_token), Some(policy_before["policy"].to_string()), &[]).await;
    assert_eq!(restored.status, 200, "{}", restored.body);
}
