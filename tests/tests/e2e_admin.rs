//! Run-time policy administration, on a stack of its own (a policy change affects everyone).

mod common;

use common::someone;
use serde_json::json;

#[tokio::test]
async fn admins_replace_the_policy_whole_or_not_at_all_and_the_kill_switch_takes_effect() {
    let api = common::api_with(&[("POLICY_CACHE_SECS", "0")]);
    let admin = format!("{}:admin", someone("root"));
    let owner = someone("alice");

    let current = api.call("GET", "/admin/policy", Some(&admin), None, &[]).await;
    assert_eq!(current.status, 200, "{}", current.body);
    assert_eq!(current.body["source"], "deployed");
    assert_eq!(current.body["policy"]["types"]["make_payment"]["blocked"], true);
    assert_eq!(api.call("GET", "/admin/policy", Some(&owner), None, &[]).await.status, 403);
    assert_eq!(
        api.call("PUT", "/admin/policy", Some(&owner), Some(current.body["policy"].to_string()), &[]).await.status,
        403
    );

    // Invalid documents are refused whole, and nothing changes.
    let mut unknown_type = current.body["policy"].clone();
    unknown_type["types"]["gmail.nuke"] = json!({"tier": 1});
    let mut bad_tier = current.body["policy"].clone();
    bad_tier["types"]["gmail.flag"]["tier"] = json!(9);
    let mut typo = current.body["policy"].clone();
    typo["auto_execution"]["enabeld"] = json!(false);
    for bad in [unknown_type, bad_tier, typo, json!({"types": {}}), json!("policy")] {
        let r = api.call("PUT", "/admin/policy", Some(&admin), Some(bad.to_string()), &[]).await;
        assert_eq!((r.status, r.body["error"].as_str()), (400, Some("invalid_request")), "{}", r.body);
    }
    assert_eq!(api.call("PUT", "/admin/policy", Some(&admin), Some("{nope".into()), &[]).await.status, 400);
    assert_eq!(api.call("GET", "/admin/policy", Some(&admin), None, &[]).await.body["source"], "deployed");

    // Tier-1 runs automatically until the kill switch is thrown.
    let flag =
        json!({"action_type": "gmail.flag", "payload": {"message_id": "m1"}, "confidence": 0.95, "dry_run": true});
    assert_eq!(api.post("/actions", &owner, flag.clone()).await.body["tier"], 1);
    let mut off = current.body["policy"].clone();
    off["auto_execution"]["enabled"] = json!(false);
    let stored = api.call("PUT", "/admin/policy", Some(&admin), Some(off.to_string()), &[]).await;
    assert_eq!((stored.status, stored.body["version"].as_u64()), (200, Some(1)), "{}", stored.body);
    let after = api.post("/actions", &owner, flag).await;
    assert_eq!(after.body["tier"], 2, "{}", after.body);
    assert!(after.body["reasons"].as_array().unwrap().contains(&json!("auto_execution_disabled")));

    // The change is audited: who, when, what.
    let status = api.call("GET", "/admin/policy", Some(&admin), None, &[]).await;
    assert_eq!(status.body["source"], "override");
    assert_eq!(status.body["updated_by"], admin.trim_end_matches(":admin"));
    let events = status.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor"], admin.trim_end_matches(":admin"));
    assert_eq!(events[0]["detail"]["policy"]["auto_execution"]["enabled"], false);

    // A type the policy declares: validated by its JSON Schema at intake, recorded for a human,
    // and published with its schema for agents.
    let mut declared = off.clone();
    declared["types"]["CHANGE_URL"] = json!({
        "tier": 3,
        "reversible": false,
        "description": "move a page to a new URL (a human does it)",
        "schema": {"type": "object", "required": ["page", "new_url"], "additionalProperties": false,
                   "properties": {"page": {"type": "string"}, "new_url": {"type": "string", "pattern": "^https://"}}}
    });
    let mut broken = declared.clone();
    broken["types"]["CHANGE_URL"]["schema"] = json!({"type": "no-such-type"});
    let refused = api.call("PUT", "/admin/policy", Some(&admin), Some(broken.to_string()), &[]).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body["message"].as_str().unwrap().contains("types.CHANGE_URL.schema"), "{}", refused.body);
    let stored = api.call("PUT", "/admin/policy", Some(&admin), Some(declared.to_string()), &[]).await;
    assert_eq!((stored.status, stored.body["version"].as_u64()), (200, Some(2)), "{}", stored.body);
    let good = json!({"action_type": "CHANGE_URL", "payload": {"page": "/a", "new_url": "https://blog.example.com/b"}});
    let made = api.post("/actions", &owner, good).await;
    assert_eq!((made.status, made.body["status"].as_str()), (201, Some("manual")), "{}", made.body);
    let bad = json!({"action_type": "CHANGE_URL", "payload": {"page": "/a", "new_url": "http://insecure"}});
    let r = api.post("/actions", &owner, bad).await;
    assert_eq!((r.status, r.body["field"].as_str()), (400, Some("payload.new_url")), "{}", r.body);
    let types = api.get("/action-types", &owner).await;
    assert_eq!(types.status, 200, "{}", types.body);
    let list = types.body["action_types"].as_array().unwrap();
    let change_url = list.iter().find(|t| t["action_type"] == "CHANGE_URL").expect("published");
    assert_eq!((change_url["tier"].as_u64(), change_url["reversible"].as_bool()), (Some(3), Some(false)));
    assert_eq!(change_url["payload_schema"]["required"], json!(["page", "new_url"]));
    let email = list.iter().find(|t| t["action_type"] == "send_email").expect("built-in published");
    assert_eq!(email["payload_schema"]["required"], json!(["to", "subject"]));
    assert!(list.iter().all(|t| t["action_type"] != "make_payment"), "blocked types are left out");
    assert_eq!(api.call("GET", "/action-types", None, None, &[]).await.status, 401);

    // A declared tier-1 type run by the integrator's connector: the signing key is in Secrets
    // Manager, every call is signed, the link is added once and a rollback removes it.
    let secret_name = common::connector_secret(&api, "shop").await;
    let mut shop = current.body["policy"].clone();
    shop["connectors"]["shop"] = json!({"url": format!("{}/connector/shop", api.stack.fakes_url), "secret": secret_name,
                                         "timeout": "PT5S", "phases": ["execute", "rollback"]});
    shop["types"]["ADD_AFFILIATE_LINK"] = json!({"tier": 1, "connector": "shop", "description": "add an affiliate link",
        "schema": {"type": "object", "required": ["page", "url"], "additionalProperties": false,
                   "properties": {"page": {"type": "string"}, "url": {"type": "string", "format": "uri"}}}});
    let stored = api.call("PUT", "/admin/policy", Some(&admin), Some(shop.to_string()), &[]).await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    let published = api.get("/action-types", &owner).await.body;
    let entry = published["action_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["action_type"] == "ADD_AFFILIATE_LINK")
        .cloned();
    assert_eq!(entry.as_ref().map(|e| e["connector"].clone()), Some(json!("shop")), "{published}");
    assert!(!published.to_string().contains("/connector/shop"), "no connector URL is published");
    let link = json!({"action_type": "ADD_AFFILIATE_LINK", "confidence": 0.95,
                      "payload": {"page": "/best-pens", "url": "https://shop.example.com/pen?ref=ag"}});
    let made = api.post("/actions", &owner, link).await;
    assert_eq!((made.status, made.body["status"].as_str()), (201, Some("queued")), "{}", made.body);
    let id = made.body["action_id"].as_str().unwrap().to_owned();
    let done = common::wait_for_status(&api, &owner, &id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    // The connector's rollback data is kept with the step's snapshot, never shown.
    assert_eq!(done["steps"][0]["result"]["rollback_data_kept"], true, "{done}");
    assert!(!done.to_string().contains("rollback_data\""), "no rollback data in the API: {done}");
    // A duplicate delivery of the finished step's message calls nothing again.
    common::send_to_work_queue(&api, &json!({"action_id": id, "step": 0}).to_string()).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let log: serde_json::Value =
        api.http.get(format!("{}/_fake/connector", api.stack.fakes_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["links"]["/best-pens"], json!(["https://shop.example.com/pen?ref=ag"]), "{log}");
    let calls = log["calls"].as_array().unwrap();
    assert!(calls.iter().all(|c| c["verified"] == true), "signed with the secret: {log}");
    assert_eq!(calls.iter().filter(|c| c["phase"] == "execute").count(), 1, "called once: {log}");
    let undone = api.post(&format!("/actions/{id}/rollback"), &owner, json!({"reason": "wrong page"})).await;
    assert_eq!((undone.status, undone.body["status"].as_str()), (200, Some("rolled_back")), "{}", undone.body);
    let log: serde_json::Value =
        api.http.get(format!("{}/_fake/connector", api.stack.fakes_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["links"]["/best-pens"], json!([]), "the rollback removed exactly the link: {log}");
    let calls = log["calls"].as_array().unwrap();
    assert_eq!(calls.iter().filter(|c| c["phase"] == "rollback").count(), 1, "undone once: {log}");
    assert!(calls.iter().all(|c| c["verified"] == true), "{log}");
}
