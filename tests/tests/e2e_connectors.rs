//! Declared action types run by the integrator's connectors, through the whole local stack
//! (on a stack of its own: it replaces the policy). The reference connector in the fakes plays
//! the site of the monetization spec; its signing key is in Secrets Manager (the emulator's).

mod common;

use common::{someone, Api, APPROVER};
use serde_json::{json, Value};

async fn connector_log(api: &Api) -> Value {
    api.http.get(format!("{}/_fake/connector", api.stack.fakes_url)).send().await.unwrap().json().await.unwrap()
}

async fn control(api: &Api, body: Value) {
    let r = api.http.post(format!("{}/_fake/connector", api.stack.fakes_url)).json(&body).send().await.unwrap();
    assert!(r.status().is_success());
}

/// The approval mail of `id` in the local outbox.
async fn mail_of(api: &Api, id: &str) -> Value {
    for _ in 0..100 {
        let outbox = api.call("GET", "/_local/outbox", None, None, &[]).await;
        let found = outbox.body["messages"]
            .as_array()
            .and_then(|messages| messages.iter().find(|m| m["text"].as_str().is_some_and(|t| t.contains(id))).cloned());
        if let Some(m) = found {
            return m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no mail for {id}");
}

async fn integration(api: &Api, admin: &str, name: &str) -> Value {
    let all = api.call("GET", "/admin/integrations", Some(admin), None, &[]).await;
    assert_eq!(all.status, 200, "{}", all.body);
    all.body["integrations"].as_array().unwrap().iter().find(|i| i["integration"] == name).cloned().unwrap_or(json!({}))
}

/// Polls until `check` holds for the integration's entry (panics after `secs`).
async fn until_integration(api: &Api, admin: &str, name: &str, secs: u64, check: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let entry = integration(api, admin, name).await;
        if check(&entry) {
            return entry;
        }
        assert!(start.elapsed().as_secs() < secs, "{name} never got there: {entry}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn declared_types_validate_preview_wait_for_approval_stay_manual_and_a_failing_connector_opens_its_own_breaker() {
    let api = common::api_with(&[("POLICY_CACHE_SECS", "0")]);
    let admin = format!("{}:admin", someone("root"));
    let owner = someone("alice");

    // The signing key in Secrets Manager; the fake site verifies every call with it.
    let secret_name = common::connector_secret(&api, "site").await;
    control(&api, json!({"switch_down": false})).await;

    let current = api.call("GET", "/admin/policy", Some(&admin), None, &[]).await;
    let mut policy = current.body["policy"].clone();
    let connector = |name: &str, phases: Value| {
        json!({"url": format!("{}/connector/{name}", api.stack.fakes_url), "secret": secret_name, "timeout": "PT5S",
               "phases": phases})
    };
    // The flaky one is not asked at intake (a connector that is down refuses new work there).
    policy["connectors"] = json!({"site": connector("shop", json!(["execute", "rollback", "validate", "preview"])),
                                  "flaky": connector("switch", json!(["execute", "rollback"]))});
    let page = json!({"type": "string", "minLength": 1, "maxLength": 2048});
    policy["types"]["ADD_AFFILIATE_LINK"] = json!({"tier": 1, "connector": "site", "description": "add an affiliate link",
        "schema": {"type": "object", "required": ["page", "url"], "additionalProperties": false,
                   "properties": {"page": page, "url": {"type": "string", "format": "uri", "pattern": "^https://"}}}});
    policy["types"]["EXPAND_CONTENT"] = json!({"tier": 2, "connector": "site", "description": "add paragraphs to a page",
        "schema": {"type": "object", "required": ["page", "section", "text"], "additionalProperties": false,
                   "properties": {"page": page, "section": {"type": "string"}, "text": {"type": "string", "minLength": 1}}}});
    // Attempts enough to outlast the outage: waiting on an open breaker spends none.
    policy["types"]["UPDATE_META_DESCRIPTION"] = json!({"tier": 1, "connector": "flaky", "max_attempts": 20,
        "description": "replace a meta description",
        "schema": {"type": "object", "required": ["page", "description"],
                   "properties": {"page": page, "description": {"type": "string"}}}});
    policy["types"]["ADD_AD_SLOT"] = json!({"tier": 2, "connector": "site", "description": "place an ad slot",
        "rate_limits": [{"window": "hour", "limit": 1}],
        "schema": {"type": "object", "required": ["page", "position"], "properties": {"page": page, "position": {"type": "string"}}}});
    policy["types"]["CHANGE_URL"] = json!({"tier": 3, "reversible": false, "description": "move a page (a human does it)",
        "schema": {"type": "object", "required": ["page", "new_url"], "properties": {"page": page, "new_url": {"type": "string"}}}});
    // The flaky connector's breaker opens after 2 transient failures and cools off for 2 s.
    // (One action's failures are enough here: min_actions 1.)
    policy["integrations"] =
        json!({"connector:flaky": {"consecutive_failures": 2, "cool_off": "PT2S", "min_actions": 1}});
    let stored = api.call("PUT", "/admin/policy", Some(&admin), Some(policy.to_string()), &[]).await;
    assert_eq!(stored.status, 200, "{}", stored.body);

    // Schema violations are 400s naming the field; the connector's validate refusal is a 400
    // with its words; neither is stored.
    let bad = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "ADD_AFFILIATE_LINK", "confidence": 0.95,
                                           "payload": {"page": "/best-pens", "url": "http://plain"}}),
        )
        .await;
    assert_eq!((bad.status, bad.body["field"].as_str()), (400, Some("payload.url")), "{}", bad.body);
    let missing = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "ADD_AFFILIATE_LINK", "confidence": 0.95,
                                           "payload": {"page": "/missing/page", "url": "https://shop.example.com/p"}}),
        )
        .await;
    assert_eq!((missing.status, missing.body["error"].as_str()), (400, Some("connector_refused")), "{}", missing.body);
    assert_eq!(missing.body["field"], "payload");
    assert!(missing.body["message"].as_str().unwrap().contains("page_missing"), "{}", missing.body);

    // Over its rate limit a request is refused before the connector is asked.
    let slot =
        json!({"action_type": "ADD_AD_SLOT", "confidence": 0.9, "payload": {"page": "/best-pens", "position": "top"}});
    assert_eq!(api.post("/actions", &owner, slot.clone()).await.status, 201);
    let asked = connector_log(&api).await["calls"].as_array().unwrap().len();
    let over = api.post("/actions", &owner, slot).await;
    assert_eq!((over.status, over.body["error"].as_str()), (429, Some("rate_limited")), "{}", over.body);
    assert_eq!(connector_log(&api).await["calls"].as_array().unwrap().len(), asked, "no call for refused work");

    // A dry run shows the connector's own sentence.
    let dry = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "ADD_AFFILIATE_LINK", "confidence": 0.95, "dry_run": true,
                                           "payload": {"page": "/best-pens", "url": "https://shop.example.com/p"}}),
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    let line = dry.body["preview"][0].as_str().unwrap();
    assert!(line.starts_with("ADD_AFFILIATE_LINK: add an affiliate link"), "ours first: {line}");
    let theirs =
        "(the connector says: Add the link https://shop.example.com/p to /best-pens (it has 0 affiliate links now))";
    assert!(line.ends_with(theirs), "{line}");

    // Tier 2: waits for approval, with the connector's preview in the mail; runs once approved.
    let text = "Two new paragraphs about fountain pens.";
    let expand = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "EXPAND_CONTENT", "confidence": 0.95, "approver": APPROVER,
                                           "payload": {"page": "/best-pens", "section": "intro", "text": text}}),
        )
        .await;
    assert_eq!((expand.status, expand.body["status"].as_str()), (201, Some("awaiting_approval")), "{}", expand.body);
    let expand_id = expand.body["action_id"].as_str().unwrap().to_owned();
    let mail = mail_of(&api, &expand_id).await;
    let sentence =
        format!("Add {} characters to the section \u{201c}intro\u{201d} of /best-pens", text.chars().count());
    assert!(mail["text"].as_str().unwrap().contains(&sentence), "{mail}");
    assert!(mail["html"].as_str().unwrap().contains("/best-pens"), "{mail}");
    let stored = api.get(&format!("/actions/{expand_id}"), &owner).await.body;
    assert_eq!(stored["steps"][0]["preview"], sentence.as_str(), "{stored}");
    assert!(connector_log(&api).await["sections"].get("/best-pens").is_none(), "nothing ran before approval");
    assert_eq!(api.post(&format!("/actions/{expand_id}/approve"), APPROVER, json!({})).await.status, 200);
    let done = common::wait_for_status(&api, &owner, &expand_id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(connector_log(&api).await["sections"]["/best-pens"][0]["text"], text);

    // Tier 3: recorded for a human, never sent to any connector.
    let calls_before = connector_log(&api).await["calls"].as_array().unwrap().len();
    let manual = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "CHANGE_URL", "payload": {"page": "/best-pens", "new_url": "/pens"}}),
        )
        .await;
    assert_eq!((manual.status, manual.body["status"].as_str()), (201, Some("manual")), "{}", manual.body);
    assert_eq!(connector_log(&api).await["calls"].as_array().unwrap().len(), calls_before);

    // The flaky connector goes down: its breaker opens on its own; the work waits queued.
    control(&api, json!({"switch_down": true})).await;
    let meta = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "UPDATE_META_DESCRIPTION", "confidence": 0.95,
                                           "payload": {"page": "/best-pens", "description": "Pens we love"}}),
        )
        .await;
    assert_eq!(meta.status, 201, "{}", meta.body);
    let meta_id = meta.body["action_id"].as_str().unwrap().to_owned();
    let open =
        until_integration(&api, &admin, "connector:flaky", 60, |i| i["state"] == "open" || i["state"] == "half_open")
            .await;
    assert_eq!(open["reason"], "2 calls to connector:flaky failed in a row", "{open}");
    let waiting = api.get(&format!("/actions/{meta_id}"), &owner).await.body;
    assert_eq!(waiting["status"], "queued", "it waits, it does not fail: {waiting}");
    // Other integrations keep running meanwhile: the site connector adds a link.
    let link = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "ADD_AFFILIATE_LINK", "confidence": 0.95,
                                           "payload": {"page": "/best-pens", "url": "https://shop.example.com/pen"}}),
        )
        .await;
    let link_id = link.body["action_id"].as_str().unwrap().to_owned();
    let linked = common::wait_for_status(&api, &owner, &link_id, &["completed", "failed"], 60).await;
    assert_eq!(linked["status"], "completed", "{linked}");
    assert_eq!(integration(&api, &admin, "connector:site").await["state"], "closed");
    assert_eq!(api.call("GET", "/admin/integrations", Some(&owner), None, &[]).await.status, 403);

    // The site comes back: after the cool-off a probe goes through, closes it, and the work runs.
    control(&api, json!({"switch_down": false})).await;
    let done = common::wait_for_status(&api, &owner, &meta_id, &["completed", "failed"], 90).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(connector_log(&api).await["meta"]["/best-pens"], "Pens we love");
    let closed = integration(&api, &admin, "connector:flaky").await;
    assert_eq!(closed["state"], "closed", "{closed}");
    let trail = api.call("GET", "/admin/integrations/connector:flaky", Some(&admin), None, &[]).await;
    let moves: Vec<String> = trail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}>{}", e["from"].as_str().unwrap_or("?"), e["to"].as_str().unwrap_or("?")))
        .collect();
    assert!(moves.first().is_some_and(|m| m == "closed>open"), "{moves:?}");
    assert!(moves.iter().any(|m| m == "open>half_open"), "{moves:?}");
    assert_eq!(moves.last().map(String::as_str), Some("half_open>closed"), "{moves:?}");
    let outbox = api.call("GET", "/_local/outbox", None, None, &[]).await;
    let alerts = outbox.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subject"].as_str().is_some_and(|s| s.contains("connector:flaky paused")))
        .count();
    assert_eq!(alerts, 1, "the admin was told, once");
    // Every try of the waiting step, refused or not, carried the same Idempotency-Key.
    let log = connector_log(&api).await;
    let tries: Vec<&Value> = log["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action_id"] == meta_id.as_str() && c["phase"] == "execute")
        .collect();
    assert!(tries.len() >= 2, "refused during the outage, then run: {tries:?}");
    assert!(
        tries
            .iter()
            .all(|c| c["idempotency_key"] == tries[0]["idempotency_key"]
                && c["key_in_body"] == tries[0]["idempotency_key"]),
        "{tries:?}"
    );
    assert!(connector_log(&api).await["calls"].as_array().unwrap().iter().all(|c| c["verified"] == true));
}
