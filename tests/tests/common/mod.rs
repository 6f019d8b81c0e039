//! Helpers shared by the end-to-end test binaries: HTTP calls through the local gateway.
#![allow(dead_code)]

use actiongate_local::stack::{shared_with, SharedStack};
use serde_json::{json, Value};

pub struct Api {
    pub stack: SharedStack,
    pub http: reqwest::Client,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub fn api() -> Api {
    api_with(&[])
}

/// Room for the automatic executions of every test in a binary (they share one stack).
pub use actiongate_local::ROOMY_AUTO_LIMITS;

/// The deployed policy with `edits` (exact text replacements) applied, written for this test
/// binary; returns its path for `POLICY_FILE`.
pub fn policy_file(name: &str, edits: &[(&str, &str)]) -> String {
    actiongate_local::policy_file(name, edits).expect("writing the test policy")
}

/// Suites whose tier-1 work fails on purpose must not open the shared stack's breaker.
pub const PATIENT_BREAKER: (&str, &str) =
    ("per_day = 5000", "per_day = 5000\nbreaker = { consecutive_failures = 1000, min_sample = 1000 }");

/// A stack with the roomy policy (and a patient breaker) plus `env` for the functions.
pub fn api_with(env: &[(&str, &str)]) -> Api {
    api_with_policy(&[], env)
}

/// Like [`api_with`], with more `edits` to the policy.
pub fn api_with_policy(edits: &[(&str, &str)], env: &[(&str, &str)]) -> Api {
    let mut all_edits = vec![ROOMY_AUTO_LIMITS, PATIENT_BREAKER];
    all_edits.extend_from_slice(edits);
    let policy = policy_file(&format!("roomy-{}", std::process::id()), &all_edits);
    let mut all: Vec<(&str, &str)> = vec![("POLICY_FILE", &policy)];
    all.extend_from_slice(env);
    Api { stack: shared_with(&all), http: reqwest::Client::new() }
}

/// A user name no other test uses.
/// Polls `GET /actions/{id}` until its status is one of `wanted` (panics after `secs`).
pub async fn wait_for_status(api: &Api, owner: &str, id: &str, wanted: &[&str], secs: u64) -> Value {
    let start = std::time::Instant::now();
    loop {
        let action = api.get(&format!("/actions/{id}"), owner).await.body;
        if action["status"].as_str().is_some_and(|s| wanted.contains(&s)) {
            return action;
        }
        if start.elapsed().as_secs() > secs {
            panic!("action {id} did not reach {wanted:?} in {secs}s: {action}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub fn someone(name: &str) -> String {
    format!("{name}-{}", &uuid_like()[..12])
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:06x}", std::process::id(), n) + &chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0).to_string()
}

impl Api {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        user: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}{path}", self.stack.gateway_url);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(u) = user {
            req = req.header("authorization", format!("Bearer dev:{u}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("gateway reachable");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        // Every answer of a documented route holds to the OpenAPI document.
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
        if let Err(e) = actiongate_local::openapi::check(method, path, status, content_type, &body) {
            panic!("the API and openapi/openapi.json disagree: {e}");
        }
        Reply { status, headers, body }
    }

    pub async fn post(&self, path: &str, user: &str, body: Value) -> Reply {
        self.call("POST", path, Some(user), Some(body.to_string()), &[]).await
    }

    pub async fn get(&self, path: &str, user: &str) -> Reply {
        self.call("GET", path, Some(user), None, &[]).await
    }
}

pub async fn futures_like_join<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    // Poll them all together on this task so the requests really overlap.
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.expect("polled to completion")).collect()
}

pub const APPROVER: &str = "ops@example.com";

pub async fn fake_state(api: &Api) -> Value {
    api.http.get(format!("{}/_fake/state", api.stack.fakes_url)).send().await.unwrap().json().await.unwrap()
}

pub fn effects_on(state: &Value, path: &str) -> usize {
    state["effects"].as_array().unwrap().iter().filter(|e| e["path"] == path).count()
}

pub fn deliveries_to(state: &Value, path: &str) -> usize {
    state["deliveries"].as_array().unwrap().iter().filter(|e| e["path"] == path).count()
}

/// Creates a webhook action and approves it through the API; returns its id.
pub async fn approved_webhook(api: &Api, owner: &str, path: &str, extra: Value) -> String {
    let mut body = json!({"action_type": "http_request", "payload": {"method": "POST", "url": format!("{}{path}", api.stack.fakes_url), "body": {"n": 1}}, "approver": APPROVER});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let created = api.post("/actions", owner, body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["action_id"].as_str().unwrap().to_owned();
    let approved = api.post(&format!("/actions/{id}/approve"), APPROVER, json!({})).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    id
}

pub async fn trail(api: &Api, owner: &str, id: &str) -> Vec<Value> {
    api.get(&format!("/actions/{id}/audit"), owner).await.body["events"].as_array().unwrap().clone()
}

/// A Gmail message in the fake (labels `INBOX`).
pub async fn seed_message(api: &Api, message: &str) {
    seed_labels(api, message, &["INBOX"]).await;
}

/// A Gmail message in the fake with `labels`.
pub async fn seed_labels(api: &Api, message: &str, labels: &[&str]) {
    api.http
        .post(format!("{}/_fake/gmail/messages", api.stack.fakes_url))
        .json(&json!({"id": message, "labelIds": labels}))
        .send()
        .await
        .unwrap();
}

/// `PUT /admin/users/{user}/kyc` as `caller` (a bearer identity, e.g. `root:admin`).
pub async fn set_kyc(api: &Api, caller: &str, user: &str, verified: bool) -> Reply {
    api.call(
        "PUT",
        &format!("/admin/users/{user}/kyc"),
        Some(caller),
        Some(json!({"verified": verified}).to_string()),
        &[],
    )
    .await
}

/// The host application stores `owner`'s Google token (any token works with the fakes).
pub async fn store_google_token(api: &Api, owner: &str) -> Reply {
    let admin = format!("{}:admin", someone("root"));
    api.call(
        "PUT",
        &format!("/admin/users/{owner}/google-token"),
        Some(&admin),
        Some(json!({"access_token": "ya29.test"}).to_string()),
        &[],
    )
    .await
}

/// The store of this binary's stack, for setting up what only a crash or a race leaves behind.
/// A fresh connector signing key in the emulator's Secrets Manager (under `actiongate/`), given
/// to the reference connector in the fakes too; returns the secret's name.
pub async fn connector_secret(api: &Api, label: &str) -> String {
    let secret_name = format!("actiongate/e2e-{label}-{}", someone("k"));
    let key = someone("signing-key");
    let sdk = actiongate_local::emulator::sdk_config_for(&api.stack.emulator).await;
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&secret_name)
        .secret_string(&key)
        .send()
        .await
        .expect("the emulator stores the secret");
    let told =
        api.http.post(format!("{}/_fake/connector", api.stack.fakes_url)).json(&json!({"secret": key})).send().await;
    assert!(told.is_ok_and(|r| r.status().is_success()), "the reference connector took its key");
    secret_name
}

pub async fn store_of(api: &Api) -> actiongate::adapters::aws::dynamo::DynamoStore {
    let sdk = actiongate_local::emulator::sdk_config_for(&api.stack.emulator).await;
    actiongate::adapters::aws::dynamo::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        api.stack.provisioned.table("ActionsTable").unwrap(),
        api.stack.provisioned.table("AuditTable").unwrap(),
    )
}

/// Puts a raw message on the stack's work queue (a duplicate delivery, a stale one, garbage).
pub async fn send_to_work_queue(api: &Api, body: &str) {
    let sqs = aws_sdk_sqs::Client::new(&actiongate_local::emulator::sdk_config_for(&api.stack.emulator).await);
    sqs.send_message()
        .queue_url(api.stack.provisioned.queue_url("WorkQueue").unwrap())
        .message_body(body)
        .send()
        .await
        .unwrap();
}
