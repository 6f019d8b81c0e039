//! End-to-end approval flow: the approval mail read back from the emulator's SES, the link's
//! page fetched like a mail scanner would, decisions by form and by API, expiry and races.

mod common;

use actiongate_local::stack::shared_with;
use common::{futures_like_join, someone, Api, Reply};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// Approvals for `gmail.spam` expire after a few seconds here, so expiry can be tested.
const SHORT_EXPIRY_SECS: u64 = 3;

fn api() -> Api {
    static POLICY: OnceLock<String> = OnceLock::new();
    let path = POLICY.get_or_init(|| {
        let spam = (
            "[types.\"gmail.spam\"]\ntier = 2",
            format!("[types.\"gmail.spam\"]\ntier = 2\napproval_expiry = \"PT{SHORT_EXPIRY_SECS}S\""),
        );
        common::policy_file(
            "e2e-approval",
            &[common::ROOMY_AUTO_LIMITS, (spam.0, &spam.1), FINANCE_QUORUM, BOARD_PURCHASES],
        )
    });
    // No sweep here: expiry must hold at decision time on its own.
    Api { stack: shared_with(&[("POLICY_FILE", path), ("ACTIONGATE_SWEEP", "off")]), http: reqwest::Client::new() }
}

/// Payments: approved by 2 of the finance group; purchases by all 10 of the board (for races).
const FINANCE_QUORUM: (&str, &str) = (
    "[types.make_payment]\ntier = 2\nblocked = true",
    "[approver_groups]\nfinance = [\"fa@example.com\", \"fb@example.com\", \"fc@example.com\"]\nboard = [\"b0@example.com\", \"b1@example.com\", \"b2@example.com\", \"b3@example.com\", \"b4@example.com\", \"b5@example.com\", \"b6@example.com\", \"b7@example.com\", \"b8@example.com\", \"b9@example.com\"]\n\n[types.make_payment]\ntier = 2\napprovers = [\"group:finance\", \"group:board\"]\napprovals_required = 2",
);
const BOARD_PURCHASES: (&str, &str) = (
    "[types.make_purchase]\ntier = 2\nrequires_kyc = true",
    "[types.make_purchase]\ntier = 2\nrequires_kyc = true\napprovers = [\"group:board\"]\napprovals_required = 10",
);

fn email_action(approver: &str) -> Value {
    json!({"action_type": "send_email", "payload": {"to": ["bob@example.com"], "subject": "Contract draft", "text": "Hi Bob, see attached."},
           "risk_score": 35, "confidence": 0.8, "approver": approver})
}

/// The approval mail for `action_id`, waiting briefly for it to arrive.
async fn approval_mail(api: &Api, action_id: &str) -> Value {
    for _ in 0..50 {
        let outbox = api.call("GET", "/_local/outbox", None, None, &[]).await;
        if let Some(m) = outbox.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["text"].as_str().is_some_and(|t| t.contains(action_id)))
        {
            return m.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no approval mail for {action_id}");
}

/// The path of the one approval link in the mail (`/approvals/<token>`).
fn link_path(mail: &Value) -> String {
    let text = mail["text"].as_str().unwrap();
    let start = text.find("/approvals/").expect("a link in the text part");
    let token: String = text[start + "/approvals/".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "a 256-bit url-safe token");
    let html = mail["html"].as_str().unwrap();
    assert!(html.contains(&format!("/approvals/{token}")), "the HTML part carries the same link");
    format!("/approvals/{token}")
}

async fn form(api: &Api, path: &str, body: &str) -> Reply {
    api.call(
        "POST",
        path,
        None,
        Some(body.to_owned()),
        &[("content-type", "application/x-www-form-urlencoded"), ("user-agent", "approver-browser/1.0")],
    )
    .await
}

async fn status_of(api: &Api, owner: &str, id: &str) -> (String, u64) {
    let action = api.get(&format!("/actions/{id}"), owner).await;
    let trail = api.get(&format!("/actions/{id}/audit"), owner).await;
    (action.body["status"].as_str().unwrap().to_owned(), trail.body["events"].as_array().unwrap().len() as u64)
}

fn html(r: &Reply) -> &str {
    r.body.as_str().expect("an HTML page")
}

async fn create(api: &Api, owner: &str, body: Value) -> String {
    let r = api.post("/actions", owner, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["status"], "awaiting_approval");
    r.body["action_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn scanner_fetches_change_nothing_and_the_human_post_approves_once() {
    let api = api();
    let owner = someone("alice");
    let approver = format!("{}@example.com", someone("boss"));
    let id = create(&api, &owner, email_action(&approver)).await;

    let mail = approval_mail(&api, &id).await;
    assert_eq!(mail["to"], json!([approver]));
    assert!(mail["subject"].as_str().unwrap().starts_with("Approval needed: send an email to bob@example.com"));
    let text = mail["text"].as_str().unwrap();
    for expected in [
        "Risk score: 35",
        "this type of action always needs a human's approval",
        "Preview (dry run)",
        "Contract draft",
        "expires at",
        &owner,
    ] {
        assert!(text.contains(expected), "mail text lacks {expected:?}:\n{text}");
    }
    let link = link_path(&mail);

    // A mail scanner: three GETs and a HEAD. Each shows the page; none changes anything.
    let before = status_of(&api, &owner, &id).await;
    for _ in 0..3 {
        let page = api.call("GET", &link, None, None, &[("user-agent", "Mimecast-Scanner")]).await;
        assert_eq!(page.status, 200);
        let body = html(&page);
        assert!(
            body.contains("Approve this action?")
                && body.contains("value=\"approve\"")
                && body.contains("value=\"reject\"")
        );
        assert!(body.contains("Contract draft") && !body.contains("<script"));
        assert_eq!(page.headers["cache-control"], "no-store");
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert_eq!(page.headers["x-frame-options"], "DENY");
        assert!(page.headers["x-robots-tag"].to_str().unwrap().contains("noindex"));
        assert!(page.headers["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
    }
    let head = api.call("HEAD", &link, None, None, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(status_of(&api, &owner, &id).await, before, "fetching the link changed the action");
    assert_eq!(before.0, "awaiting_approval");

    // The human clicks Approve.
    let decided = form(&api, &link, "decision=approve&reason=Looks+right").await;
    assert_eq!(decided.status, 200, "{}", html(&decided));
    assert!(html(&decided).contains("Approved"));
    let action = api.get(&format!("/actions/{id}"), &owner).await;
    assert!(["queued", "executing", "completed"].contains(&action.body["status"].as_str().unwrap()), "{}", action.body);
    assert_eq!(action.body["decided_by"], approver.as_str());
    let trail = api.get(&format!("/actions/{id}/audit"), &owner).await;
    let events = trail.body["events"].as_array().unwrap();
    let approved = &events[2];
    assert_eq!((approved["from"].as_str(), approved["to"].as_str()), (Some("awaiting_approval"), Some("approved")));
    assert_eq!(approved["actor"], approver.as_str());
    assert_eq!(approved["reason"], "approved: Looks right");
    assert_eq!(approved["source_ip"], "127.0.0.1");
    assert_eq!(approved["user_agent"], "approver-browser/1.0");
    assert_eq!((events[3]["from"].as_str(), events[3]["to"].as_str()), (Some("approved"), Some("queued")));
    // (then, as the executor gets to it: queued → executing → completed)

    // The executor runs it: the email goes out, once.
    let done = common::wait_for_status(&api, &owner, &id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    let outbox = api.call("GET", "/_local/outbox", None, None, &[]).await;
    let sent: Vec<&Value> = outbox.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subject"] == "Contract draft")
        .filter(|m| m["text"].as_str().is_some_and(|t| t.contains("Hi Bob")))
        .collect();
    assert!(!sent.is_empty(), "the approved email was not sent");

    // A second click: the already-decided page, and nothing changes.
    let again = form(&api, &link, "decision=reject").await;
    assert_eq!(again.status, 409);
    assert!(html(&again).contains("already approved by") && html(&again).contains(&approver));
    let shown = api.call("GET", &link, None, None, &[]).await;
    assert_eq!(shown.status, 409);
    let (status, events) = status_of(&api, &owner, &id).await;
    assert_eq!(status, "completed");
    let trail = api.get(&format!("/actions/{id}/audit"), &owner).await;
    let decisions =
        trail.body["events"].as_array().unwrap().iter().filter(|e| e["from"] == "awaiting_approval").count();
    assert_eq!(decisions, 1, "one decision only, {events} events");
}

#[tokio::test]
async fn reject_by_link_records_the_reason() {
    let api = api();
    let owner = someone("alice");
    let approver = format!("{}@example.com", someone("boss"));
    let id = create(&api, &owner, email_action(&approver)).await;
    let link = link_path(&approval_mail(&api, &id).await);
    let r = form(&api, &link, "decision=reject&reason=wrong+recipient").await;
    assert_eq!(r.status, 200);
    assert!(html(&r).contains("Rejected"));
    let action = api.get(&format!("/actions/{id}"), &owner).await;
    assert_eq!(action.body["status"], "rejected");
    assert_eq!(action.body["decision_reason"], "wrong recipient");
}

#[tokio::test]
async fn concurrent_approve_and_reject_have_exactly_one_winner() {
    let api = api();
    for round in 0..3 {
        let owner = someone("alice");
        let approver = format!("{}@example.com", someone("boss"));
        let id = create(&api, &owner, email_action(&approver)).await;
        let link = link_path(&approval_mail(&api, &id).await);
        let replies =
            futures_like_join([form(&api, &link, "decision=approve"), form(&api, &link, "decision=reject")]).await;
        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "round {round}: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 1, "round {round}: {statuses:?}");
        let winner_approved = replies[0].status == 200;
        let trail = api.get(&format!("/actions/{id}/audit"), &owner).await;
        let decisions: Vec<&str> = trail.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["from"] == "awaiting_approval")
            .map(|e| e["to"].as_str().unwrap())
            .collect();
        assert_eq!(decisions, vec![if winner_approved { "approved" } else { "rejected" }], "round {round}");
    }
}

#[tokio::test]
async fn expired_link_is_refused_and_expires_the_action() {
    let api = api();
    let owner = someone("alice");
    let r = api
        .post(
            "/actions",
            &owner,
            json!({"action_type": "gmail.spam", "payload": {"message_id": "m1"}, "approver": "spam-boss@example.com"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["action_id"].as_str().unwrap().to_owned();
    let link = link_path(&approval_mail(&api, &id).await);
    assert_eq!(api.call("GET", &link, None, None, &[]).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(SHORT_EXPIRY_SECS + 1)).await;

    let page = api.call("GET", &link, None, None, &[]).await;
    assert_eq!(page.status, 410);
    assert_eq!(
        status_of(&api, &owner, &id).await.0,
        "awaiting_approval",
        "a GET never changes state, even when expired"
    );
    let late = form(&api, &link, "decision=approve").await;
    assert_eq!(late.status, 410);
    assert!(html(&late).contains("expired"));
    let (status, _) = status_of(&api, &owner, &id).await;
    assert_eq!(status, "expired");
    let trail = api.get(&format!("/actions/{id}/audit"), &owner).await;
    let last = trail.body["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["from"].as_str(), last["to"].as_str()), (Some("awaiting_approval"), Some("expired")));
}

#[tokio::test]
async fn tampered_unknown_and_malformed_tokens_get_a_404_page() {
    let api = api();
    let owner = someone("alice");
    let id = create(&api, &owner, email_action("boss@example.com")).await;
    let link = link_path(&approval_mail(&api, &id).await);
    let mut tampered = link.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for path in [
        tampered.as_str(),
        "/approvals/not-a-token",
        "/approvals/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/approvals/%00%ff",
    ] {
        let page = api.call("GET", path, None, None, &[]).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(html(&page).contains("not valid"));
        assert_eq!(page.headers["cache-control"], "no-store");
        let post = form(&api, path, "decision=approve").await;
        assert_eq!(post.status, 404, "{path}");
    }
    assert_eq!(status_of(&api, &owner, &id).await.0, "awaiting_approval");
}

#[tokio::test]
async fn bad_forms_get_a_400_page_and_change_nothing() {
    let api = api();
    let owner = someone("alice");
    let id = create(&api, &owner, email_action("boss@example.com")).await;
    let link = link_path(&approval_mail(&api, &id).await);
    for body in [
        "",
        "reason=just+because",
        "decision=maybe",
        "decision=approve&decision=reject",
        &format!("decision=approve&reason={}", "x".repeat(1200)),
    ] {
        let r = form(&api, &link, body).await;
        assert_eq!(r.status, 400, "{body:.40}");
        assert!(
            html(&r).contains("approve or reject")
                || html(&r).contains("too long")
                || html(&r).contains("more than one")
        );
    }
    assert_eq!(status_of(&api, &owner, &id).await, ("awaiting_approval".to_owned(), 2));
    // The link still works afterwards.
    assert_eq!(api.call("GET", &link, None, None, &[]).await.status, 200);
}

#[tokio::test]
async fn cancelled_action_kills_its_link() {
    let api = api();
    let owner = someone("alice");
    let id = create(&api, &owner, email_action("boss@example.com")).await;
    let link = link_path(&approval_mail(&api, &id).await);
    assert_eq!(api.post(&format!("/actions/{id}/cancel"), &owner, json!({})).await.status, 200);
    let page = api.call("GET", &link, None, None, &[]).await;
    assert_eq!(page.status, 410);
    assert!(html(&page).contains("cancelled"));
    assert_eq!(form(&api, &link, "decision=approve").await.status, 410);
    assert_eq!(status_of(&api, &owner, &id).await.0, "cancelled");
}

#[tokio::test]
async fn api_decisions_are_for_the_approver_and_admins_only() {
    let api = api();
    let owner = someone("alice");
    let approver = format!("{}@example.com", someone("boss"));
    let id = create(&api, &owner, email_action(&approver)).await;
    let path = format!("/actions/{id}/approve");

    let stranger = api.post(&path, &someone("mallory"), json!({})).await;
    assert_eq!(stranger.status, 404, "another user must not learn the action exists");
    let owner_try = api.post(&path, &owner, json!({})).await;
    assert_eq!(owner_try.status, 403, "the owner may not approve their own action");
    let bad_body = api.post(&path, &approver, json!({"reason": 5})).await;
    assert_eq!((bad_body.status, bad_body.body["field"].as_str()), (400, Some("reason")));
    assert_eq!(
        api.post(&format!("/actions/{}/approve", "01a1feb2-0000-7000-8000-000000000000"), &approver, json!({}))
            .await
            .status,
        404
    );

    let ok = api.post(&path, &approver, json!({"reason": "fine"})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["status"], "queued");
    let again = api.post(&format!("/actions/{id}/reject"), &approver, json!({})).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"], "invalid_state");
    assert!(["queued", "executing", "completed"].contains(&again.body["status"].as_str().unwrap()), "{}", again.body);

    // The emailed link now says it was decided, by whom.
    let link = link_path(&approval_mail(&api, &id).await);
    let page = api.call("GET", &link, None, None, &[]).await;
    assert_eq!(page.status, 409);
    assert!(html(&page).contains(&approver));

    // An admin may decide another action.
    let other = create(&api, &owner, email_action(&approver)).await;
    let admin = format!("{}:admin", someone("root"));
    let rejected = api.post(&format!("/actions/{other}/reject"), &admin, json!({"reason": "not now"})).await;
    assert_eq!(rejected.status, 200);
    assert_eq!(rejected.body["status"], "rejected");
}

#[tokio::test]
async fn approval_routes_refuse_other_methods_and_unauthenticated_api_calls() {
    let api = api();
    let owner = someone("alice");
    let id = create(&api, &owner, email_action("boss@example.com")).await;
    let unauthenticated = api.call("POST", &format!("/actions/{id}/approve"), None, Some("{}".into()), &[]).await;
    assert_eq!(unauthenticated.status, 401);
    let put = api.call("PUT", "/approvals/whatever", None, None, &[]).await;
    assert_eq!(put.status, 404, "no such route at the gateway");
}

#[tokio::test]
async fn the_inbox_shows_what_waits_and_a_rejection_is_remembered() {
    let api = api();
    let owner = someone("rita");
    let approver = format!("{}@example.com", someone("boss"));
    let id = create(&api, &owner, email_action(&approver)).await;
    // The inbox is served from the by_approver index, which may lag a moment behind the write.
    let mut inbox = api.get("/approvals?status=pending", &approver).await;
    for _ in 0..20 {
        if inbox.body["approvals"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        inbox = api.get("/approvals?status=pending", &approver).await;
    }
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    let ids: Vec<&str> =
        inbox.body["approvals"].as_array().unwrap().iter().map(|a| a["action_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id.as_str()]);
    assert_eq!(api.get("/approvals", &owner).await.body["approvals"], json!([]), "the requester waits on nobody");

    let rejected = api.post(&format!("/actions/{id}/reject"), &approver, json!({"reason": "not this week"})).await;
    assert_eq!(rejected.status, 200, "{}", rejected.body);
    let again = api.post("/actions", &owner, email_action(&approver)).await;
    assert_eq!((again.status, again.body["error"].as_str()), (409, Some("previously_rejected")), "{}", again.body);
    assert_eq!(again.body["by"], approver.as_str());
    assert_eq!(again.body["reason"], "not this week");
    assert_eq!(again.body["rejected_action_id"], id.as_str());
    let inbox = api.get("/approvals", &approver).await;
    assert!(
        inbox.body["approvals"].as_array().unwrap().iter().all(|a| a["action_id"] != id.as_str()),
        "{}",
        inbox.body
    );
}

// ---------------------------------------------------------------- groups and quorum

fn payment(approver: &str, reference: &str) -> Value {
    json!({"action_type": "make_payment", "payload": {"amount": 120, "currency": "EUR", "recipient": "ACME", "reference": reference},
           "risk_score": 10, "confidence": 0.9, "approver": approver})
}

/// Every approval mail for `action_id`, by recipient, once `count` have arrived.
async fn approval_mails(api: &Api, action_id: &str, count: usize) -> Vec<(String, String)> {
    for _ in 0..50 {
        let outbox = api.call("GET", "/_local/outbox", None, None, &[]).await;
        let mails: Vec<(String, String)> = outbox.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["text"].as_str().is_some_and(|t| t.contains(action_id)))
            .map(|m| (m["to"][0].as_str().unwrap_or_default().to_owned(), link_path(m)))
            .collect();
        if mails.len() >= count {
            return mails;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("fewer than {count} approval mails for {action_id}");
}

#[tokio::test]
async fn a_two_of_three_group_needs_two_distinct_clicks_and_the_requester_never_counts() {
    let api = api();
    // The requester is in the group: never mailed, never counted, refused by API.
    let requester = "fc@example.com";
    let r = api.post("/actions", requester, payment("group:finance", &someone("inv"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["approvals_required"], 2);
    assert_eq!(r.body["approvers"], json!(["fa@example.com", "fb@example.com"]));
    let id = r.body["action_id"].as_str().unwrap().to_owned();
    let mails = approval_mails(&api, &id, 2).await;
    let to: Vec<&str> = mails.iter().map(|(to, _)| to.as_str()).collect();
    assert_eq!(to.len(), 2, "{to:?}");
    assert!(to.contains(&"fa@example.com") && to.contains(&"fb@example.com"), "a link each: {to:?}");
    let link_of = |who: &str| mails.iter().find(|(to, _)| to == who).unwrap().1.clone();
    assert_ne!(link_of("fa@example.com"), link_of("fb@example.com"));
    let refused = api.post(&format!("/actions/{id}/approve"), requester, json!({})).await;
    assert_eq!((refused.status, refused.body["error"].as_str()), (403, Some("self_approval")));

    // A scanner's GET decides nothing; fa's click counts once, however often.
    let first = link_of("fa@example.com");
    assert_eq!(api.call("GET", &first, None, None, &[]).await.status, 200);
    let clicked = form(&api, &first, "decision=approve").await;
    assert_eq!(clicked.status, 200, "{}", html(&clicked));
    assert!(html(&clicked).contains("1 of 2"), "{}", html(&clicked));
    let tabs =
        futures_like_join([form(&api, &first, "decision=approve"), form(&api, &first, "decision=approve")]).await;
    assert!(tabs.iter().all(|t| t.status == 409), "{:?}", tabs.iter().map(|t| t.status).collect::<Vec<_>>());
    let by_api = api.post(&format!("/actions/{id}/approve"), "fa@example.com", json!({})).await;
    assert_eq!((by_api.status, by_api.body["error"].as_str()), (409, Some("already_decided")), "{}", by_api.body);
    let waiting = api.get(&format!("/actions/{id}"), requester).await.body;
    assert_eq!(waiting["status"], "awaiting_approval");
    assert_eq!(waiting["approvals"].as_array().unwrap().len(), 1, "{waiting}");
    // fa's inbox no longer lists it; fb's does.
    assert!(!in_inbox(&api, "fa@example.com", &id).await);
    assert!(in_inbox(&api, "fb@example.com", &id).await);

    // A second, distinct person: approved and queued (then blocked? no: payments run once approved).
    let second = form(&api, &link_of("fb@example.com"), "decision=approve").await;
    assert_eq!(second.status, 200, "{}", html(&second));
    let decided = api.get(&format!("/actions/{id}"), requester).await.body;
    assert_ne!(decided["status"], "awaiting_approval", "{decided}");
    let voters: Vec<&str> =
        decided["approvals"].as_array().unwrap().iter().map(|v| v["approver"].as_str().unwrap()).collect();
    assert_eq!(voters, vec!["fa@example.com", "fb@example.com"]);
    let trail = api.get(&format!("/actions/{id}/audit"), requester).await.body;
    let approvals: Vec<&Value> = trail["events"].as_array().unwrap().iter().filter(|e| e["to"] == "approved").collect();
    assert_eq!(approvals.len(), 1, "one approval move: {trail}");
}

#[tokio::test]
async fn ten_parallel_decisions_on_one_quorum_leave_a_consistent_count_and_one_outcome() {
    let api = api();
    // A 2-of-13 payment the board decides: ten clicks at once, two decide it.
    let owner = someone("alice");
    let r = api.post("/actions", &owner, payment("group:board", &someone("inv"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["action_id"].as_str().unwrap().to_owned();
    let mails = approval_mails(&api, &id, 10).await;
    let replies = futures_like_join(mails.iter().map(|(_, link)| form(&api, link, "decision=approve"))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let action = api.get(&format!("/actions/{id}"), &owner).await.body;
    assert_ne!(action["status"], "awaiting_approval", "{action}");
    assert_eq!(action["approvals"].as_array().unwrap().len(), 2, "the quorum of 2 ends it: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "the others are told it was decided: {statuses:?}");
    assert_one_outcome(&api, &owner, &id, 1).await;

    // A purchase all ten must approve: ten at once, plus one of them again through the API.
    let buyer = someone("buyer");
    let admin = format!("{}:admin", someone("root"));
    assert_eq!(common::set_kyc(&api, &admin, &buyer, true).await.status, 200);
    let body = json!({"action_type": "make_purchase", "payload": {"amount": 3, "currency": "USD", "item": someone("pens")}, "confidence": 0.9});
    let r = api.post("/actions", &buyer, body).await;
    assert_eq!((r.status, r.body["approvals_required"].as_u64()), (201, Some(10)), "{}", r.body);
    let id = r.body["action_id"].as_str().unwrap().to_owned();
    let mails = approval_mails(&api, &id, 10).await;
    let mut decisions: Vec<_> = mails.iter().map(|(_, link)| form(&api, link, "decision=approve")).collect();
    let approve_path = format!("/actions/{id}/approve");
    let replies =
        tokio::join!(futures_like_join(decisions.drain(..)), api.post(&approve_path, "b3@example.com", json!({})));
    let statuses: Vec<u16> = replies.0.iter().map(|r| r.status).collect();
    let action = api.get(&format!("/actions/{id}"), &buyer).await.body;
    let mut voters: Vec<&str> =
        action["approvals"].as_array().unwrap().iter().map(|v| v["approver"].as_str().unwrap()).collect();
    voters.sort();
    let mut distinct = voters.clone();
    distinct.dedup();
    assert_eq!(voters, distinct, "nobody counted twice: {action}");
    assert_eq!(voters.len(), 10, "all ten recorded: clicks {statuses:?}, api {}", replies.1.status);
    assert_ne!(action["status"], "awaiting_approval", "{action}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count() + usize::from(replies.1.status == 200),
        10,
        "b3's two ways count once: {statuses:?} / {}",
        replies.1.body
    );
    assert_one_outcome(&api, &buyer, &id, 9).await;
}

async fn in_inbox(api: &Api, who: &str, id: &str) -> bool {
    api.get("/approvals", who).await.body["approvals"].as_array().unwrap().iter().any(|a| a["action_id"] == id)
}

/// One approval move, `votes` counted votes before it, and a trail in order.
async fn assert_one_outcome(api: &Api, owner: &str, id: &str, votes: usize) {
    let trail = api.get(&format!("/actions/{id}/audit"), owner).await.body;
    let events = trail["events"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["to"] == "approved").count(), 1, "one outcome: {trail}");
    let counted = events
        .iter()
        .filter(|e| {
            e["from"] == "awaiting_approval"
                && e["to"] == "awaiting_approval"
                && e["reason"].as_str().is_some_and(|r| r.contains(" approvals)"))
        })
        .count();
    assert_eq!(counted, votes, "{trail}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "every write in order, none twice: {seqs:?}");
}

#[tokio::test]
async fn a_delegate_receives_the_next_request_and_its_link_decides() {
    let api = api();
    let approver = format!("{}@example.com", someone("boss"));
    let deputy = format!("{}@example.com", someone("deputy"));
    let until = chrono::Utc::now() + chrono::Duration::days(2);
    let body = json!({"to": deputy, "until": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
    let set = api
        .call("PUT", &format!("/approvers/{approver}/delegation"), Some(&approver), Some(body.to_string()), &[])
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let refused =
        api.call("PUT", &format!("/approvers/{approver}/delegation"), Some(&deputy), Some(body.to_string()), &[]).await;
    assert_eq!(refused.status, 403, "only the approver or an administrator");
    let owner = someone("alice");
    let id = create(&api, &owner, email_action(&approver)).await;
    let mails = approval_mails(&api, &id, 1).await;
    assert_eq!(
        mails.iter().map(|(to, _)| to.as_str()).collect::<Vec<_>>(),
        vec![deputy.as_str()],
        "the delegate is asked"
    );
    assert!(in_inbox(&api, &deputy, &id).await);
    let decided = form(&api, &mails[0].1, "decision=approve").await;
    assert_eq!(decided.status, 200, "{}", html(&decided));
    let action = api.get(&format!("/actions/{id}"), &owner).await.body;
    assert_eq!(action["decided_by"], deputy.as_str(), "{action}");
    let ended = api.call("DELETE", &format!("/approvers/{approver}/delegation"), Some(&approver), None, &[]).await;
    assert_eq!((ended.status, ended.body["delegation"].clone()), (200, json!(null)));
}

#[tokio::test]
async fn the_mail_and_page_show_the_effect_as_its_recipient_sees_it() {
    let api = api();
    // An email reads as an email: to, subject, its text; the HTML part never renders.
    let owner = someone("alice");
    let approver = format!("{}@example.com", someone("boss"));
    let mut body = email_action(&approver);
    body["payload"]["html"] = json!("<p onclick=\"x()\">Hi <b>Bob</b></p>");
    let id = create(&api, &owner, body).await;
    let mail = approval_mail(&api, &id).await;
    let text = mail["text"].as_str().unwrap();
    assert!(
        text.contains(
            "What will happen:\n1. Email\n  To: bob@example.com\n  Subject: Contract draft\n  | Hi Bob, see attached."
        ),
        "{text}"
    );
    let page = api.call("GET", &link_path(&mail), None, None, &[]).await;
    let page = html(&page);
    assert!(
        page.contains("<dt>To</dt><dd>bob@example.com</dd>")
            && page.contains("<dt>Subject</dt><dd>Contract draft</dd>"),
        "{page}"
    );
    assert!(page.contains("&lt;p onclick=") && !page.contains("<p onclick"), "the HTML part is shown as source");
    assert!(page.contains("<details><summary>Raw payload (JSON)"), "the raw payload behind a disclosure");

    // A Gmail change reads as the message's labels before → after, read when approval was asked.
    let owner = someone("gina");
    let message = someone("msg");
    common::seed_labels(&api, &message, &["INBOX", "UNREAD", "IMPORTANT"]).await;
    assert_eq!(common::store_google_token(&api, &owner).await.status, 200);
    let spam = json!({"action_type": "gmail.spam", "payload": {"message_id": message}, "approver": approver, "confidence": 0.9});
    let id = create(&api, &owner, spam).await;
    let mail = approval_mail(&api, &id).await;
    let text = mail["text"].as_str().unwrap();
    // (The fake answers a message's labels sorted.)
    assert!(text.contains("Before: IMPORTANT, INBOX, UNREAD\n  After: IMPORTANT, UNREAD, SPAM"), "{text}");
    let page = api.call("GET", &link_path(&mail), None, None, &[]).await;
    assert!(html(&page)
        .contains("<dt>Before</dt><dd>IMPORTANT, INBOX, UNREAD</dd><dt>After</dt><dd>IMPORTANT, UNREAD, SPAM</dd>"));
    // Reading the labels changed nothing.
    let state = common::fake_state(&api).await;
    assert_eq!(state["gmail"][&message], json!(["INBOX", "UNREAD", "IMPORTANT"]), "{}", state["gmail"]);
}
