//! Every service wired to the in-memory ports, with a clock that moves only when told and fake
//! handlers that count their side effects: the services' unit tests and the lifecycle property
//! tests run here, in milliseconds and with no emulator.
//!
//! [`World::settle`] plays the infrastructure: it delivers due queue messages to the executor
//! (again after a `Retry`, as SQS would), fires due wake-ups and runs the sweep, moving the
//! clock in steps.

use actiongate::domain::{Action, ActionId};
use actiongate::handlers::webhook::{AddressGuard, Allowlist};
use actiongate::policy::Policy;
use actiongate::ports::handler::{
    Dependencies, Handler, HandlerError, HandlerFuture, PolicyReader, Registry, Reversibility, StepContext,
    StoredCredentials,
};
use actiongate::ports::memory::{MemoryDeliverer, MemoryMailer, MemoryQueue, MemoryStore, MemoryWakeUps};
use actiongate::ports::queue::ExecuteMessage;
use actiongate::ports::store::{ActionStore, Store};
use actiongate::services::approval::ApprovalService;
use actiongate::services::executor::{ExecutorService, Outcome};
use actiongate::services::intake::IntakeService;
use actiongate::services::notices::ApprovalMail;
use actiongate::services::policy_source::PolicySource;
use actiongate::services::rollback::RollbackService;
use actiongate::services::sweep::{SweepReport, SweepService};
use actiongate::Clock;
use actiongate::FixedClock;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// What a fake handler does on one call of `execute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Succeed,
    /// Fails before any effect; trying again may help.
    Transient,
    /// Fails before any effect, for good.
    Permanent,
    /// The effect happened but the answer was lost.
    EffectThenUnknown,
    /// The effect happened, then the executor's process died before recording it.
    EffectThenCrash,
    /// Fails before any effect, asking to be left alone this many seconds (`Retry-After`).
    Busy(u64),
}

/// One call of a fake handler that reached the target (the change was sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub action_id: ActionId,
    pub step: usize,
    pub action_type: String,
    /// The step's idempotency key as the handler was given it.
    pub key: String,
    /// Whether the target honours the key (a repeat with the same key changes nothing).
    pub idempotent: bool,
    pub at: DateTime<Utc>,
    /// The policy in force when it ran blocked this type.
    pub blocked_then: bool,
    /// Automatic execution was switched off when it ran.
    pub auto_off_then: bool,
}

/// What the fake handlers did, and what they are told to do next.
#[derive(Default)]
pub struct Ledger {
    /// Per (action, step): the behaviours of the next calls, in order (then `Succeed`).
    pub script: HashMap<(ActionId, usize), VecDeque<Behavior>>,
    pub effects: Vec<Effect>,
    pub undone: Vec<(ActionId, usize)>,
    /// Set by a handler that "crashed": the harness drops the executor's call.
    pub crashed: bool,
    /// The target the fake handlers say they reach (`Handler::pin`), when a test sets one.
    pub pin: Option<String>,
}

/// A fake target system: records every call that reaches it (the idempotent kind changes
/// nothing on a repeat with the same idempotency key, as a target honouring it does), and
/// undoes a change on rollback.
pub struct FakeHandler {
    pub action_type: &'static str,
    pub idempotent: bool,
    pub reversible: bool,
    pub ledger: Arc<Mutex<Ledger>>,
    pub clock: Arc<FixedClock>,
    pub policy: Arc<PolicySource>,
}

impl Handler for FakeHandler {
    fn validate(&self, _: &Value) -> Result<(), HandlerError> {
        Ok(())
    }
    fn preview(&self, _: &Value) -> String {
        format!("run {}", self.action_type)
    }
    fn reversibility(&self, _: &Value) -> Reversibility {
        if self.reversible {
            Reversibility::Reversible
        } else {
            Reversibility::Irreversible
        }
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }
    fn pin(&self) -> Option<String> {
        lock(&self.ledger).pin.clone()
    }
    /// Each fake type is an integration of its own, with its own breaker.
    fn integration(&self, _: &Value) -> Option<String> {
        Some(format!("fake:{}", self.action_type))
    }
    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async { Ok(json!({"before": true})) })
    }
    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let key = (ctx.action_id, ctx.step);
            let behavior = lock(&self.ledger).script.get_mut(&key).and_then(VecDeque::pop_front);
            let behavior = behavior.unwrap_or(Behavior::Succeed);
            let policy = self.policy.current().await;
            let blocked_then = policy.types.get(self.action_type).is_some_and(|t| t.blocked);
            let auto_off_then = !policy.auto_execution.enabled;
            let effect = |ledger: &mut Ledger, blocked_then: bool| {
                ledger.effects.push(Effect {
                    action_id: ctx.action_id,
                    step: ctx.step,
                    action_type: self.action_type.to_owned(),
                    key: ctx.idempotency_key.clone(),
                    idempotent: self.idempotent,
                    at: self.clock.now(),
                    blocked_then,
                    auto_off_then,
                });
            };
            match behavior {
                Behavior::Succeed => {
                    effect(&mut lock(&self.ledger), blocked_then);
                    Ok(json!({"done": true}))
                }
                Behavior::Transient => Err(HandlerError::transient("http_503", "target unavailable (test)")),
                Behavior::Busy(secs) => {
                    Err(HandlerError::transient("http_429", "target busy (test)").retry_after(Some(secs)))
                }
                Behavior::Permanent => Err(HandlerError::permanent("http_400", "target refused (test)")),
                Behavior::EffectThenUnknown => {
                    effect(&mut lock(&self.ledger), blocked_then);
                    Err(HandlerError::unknown("timeout", "no answer after sending (test)"))
                }
                Behavior::EffectThenCrash => {
                    {
                        let mut ledger = lock(&self.ledger);
                        effect(&mut ledger, blocked_then);
                        ledger.crashed = true;
                    }
                    std::future::pending().await
                }
            }
        })
    }
    fn rollback<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
        _: &'a Value,
        _: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            lock(&self.ledger).undone.push((ctx.action_id, ctx.step));
            Ok(json!({"undone": true}))
        })
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fake types: a reversible idempotent tier-1 type, an irreversible non-idempotent
/// tier-2 type and a tier-3 type nobody executes.
pub const TYPES: [(&str, bool, bool); 3] =
    [("gmail.archive", true, true), ("send_email", false, false), ("gmail.label", true, true)];

/// A policy for the world: the deployed one (`infra/policy.toml`) with tighter automatic limits
/// (5 an hour, a one-minute cool-down, a breaker that opens after 3 failures in a row),
/// compensation on failure, tier-2 `gmail.label` and `send_email` limited to 4 an hour.
pub fn policy() -> Policy {
    let mut doc: toml::Table = include_str!("../../infra/policy.toml").parse().expect("the deployed policy is TOML");
    let overrides: toml::Table = r#"
defaults = { compensate_on_failure = true }
auto_execution = { per_hour = 5, per_day = 50, cooldown = "PT1M", breaker = { failure_ratio = 0.5, min_sample = 4, window = 10, consecutive_failures = 3 } }
types = { "gmail.label" = { tier = 2 }, send_email = { rate_limits = [{ window = "hour", limit = 4 }] } }
"#
    .parse()
    .expect("the overrides are TOML");
    merge(&mut doc, overrides);
    Policy::parse_toml(&doc.to_string()).expect("the world's policy parses")
}

/// Deep-merges `from` into `into` (tables merge, anything else replaces).
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

pub struct World {
    pub store: MemoryStore,
    pub queue: MemoryQueue,
    pub mailer: MemoryMailer,
    pub wakeups: MemoryWakeUps,
    /// The receiver of status notifications.
    pub receiver: MemoryDeliverer,
    pub clock: Arc<FixedClock>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub policies: Arc<PolicySource>,
    pub intake: IntakeService,
    pub approval: ApprovalService,
    pub executor: Arc<ExecutorService>,
    pub sweep: SweepService,
    pub rollback: RollbackService,
    /// Messages the queue holds, by when they become visible.
    pub inbox: Vec<(DateTime<Utc>, ExecuteMessage)>,
    /// What the executor did with each delivered message.
    pub outcomes: Vec<(ExecuteMessage, Outcome)>,
}

impl World {
    pub fn new() -> Self {
        Self::with_policy(policy())
    }

    pub fn with_policy(policy: Policy) -> Self {
        let start = DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z").unwrap().with_timezone(&Utc);
        let clock = Arc::new(FixedClock::at(start));
        let queue = MemoryQueue::default();
        let store = MemoryStore::new().with_delivery_queue(Arc::new(queue.clone()));
        let shared: Arc<dyn Store> = Arc::new(store.clone());
        let receiver = MemoryDeliverer::default();
        let mailer = MemoryMailer::new("actiongate@example.com");
        let wakeups = MemoryWakeUps::default();
        // Read at every use: a policy change is in force at once.
        let policies = Arc::new(PolicySource::new(shared.clone(), policy, std::time::Duration::ZERO));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut handlers: BTreeMap<&'static str, Arc<dyn Handler>> = BTreeMap::new();
        for (action_type, idempotent, reversible) in TYPES {
            let handler = FakeHandler {
                action_type,
                idempotent,
                reversible,
                ledger: Arc::clone(&ledger),
                clock: Arc::clone(&clock),
                policy: Arc::clone(&policies),
            };
            handlers.insert(action_type, Arc::new(handler));
        }
        let deps = || Dependencies {
            http: reqwest::Client::new(),
            mailer: Some(Arc::new(mailer.clone())),
            credentials: Arc::new(StoredCredentials(shared.clone())),
            gmail_base: "http://127.0.0.1:9".into(),
            calendar_base: "http://127.0.0.1:9".into(),
            drive_base: "http://127.0.0.1:9".into(),
            docs_base: "http://127.0.0.1:9".into(),
            tasks_base: "http://127.0.0.1:9".into(),
            guard: Arc::new(AddressGuard::new(Allowlist::parse("")).expect("the guard builds")),
            policy: policies.clone() as Arc<dyn PolicyReader>,
            kyc: Arc::new(StoredCredentials(shared.clone())),
        };
        let clock_dyn: Arc<dyn Clock> = clock.clone();
        let approval_mail =
            || ApprovalMail { mailer: Arc::new(mailer.clone()), public_base_url: "https://ag.example.com".into() };
        let executor = Arc::new(
            ExecutorService::new(
                shared.clone(),
                Arc::new(queue.clone()),
                Arc::new(wakeups.clone()),
                Registry::new(handlers.clone()),
                deps(),
                clock_dyn.clone(),
                false,
            )
            .with_notifications(Arc::new(receiver.clone())),
        );
        Self {
            intake: IntakeService::new(
                shared.clone(),
                Arc::new(queue.clone()),
                policies.clone(),
                approval_mail(),
                Registry::new(handlers.clone()),
                clock_dyn.clone(),
            )
            .with_notification_keys(Arc::new(receiver.clone())),
            approval: ApprovalService::new(
                shared.clone(),
                Arc::new(queue.clone()),
                Registry::new(handlers.clone()),
                clock_dyn.clone(),
            )
            .with_policies(policies.clone()),
            sweep: SweepService::new(
                shared.clone(),
                Arc::new(queue.clone()),
                Registry::new(handlers.clone()),
                policies.clone(),
                Some(approval_mail()),
                clock_dyn.clone(),
            ),
            rollback: RollbackService::new(shared.clone(), Registry::new(handlers), deps(), clock_dyn),
            executor,
            store,
            queue,
            mailer,
            wakeups,
            receiver,
            clock,
            ledger,
            policies,
            inbox: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves the clock on.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// A request to the API as `user` (an admin with `admin`), with the claims API Gateway's
    /// JWT authorizer passes on.
    pub fn request(method: &str, path: &str, body: Option<Value>, user: &str, admin: bool) -> lambda_http::Request {
        Self::request_with(method, path, body, user, admin, &[])
    }

    /// [`World::request`] with extra headers.
    pub fn request_with(
        method: &str,
        path: &str,
        body: Option<Value>,
        user: &str,
        admin: bool,
        headers: &[(&str, &str)],
    ) -> lambda_http::Request {
        let email = if user.contains('@') { user.to_owned() } else { format!("{user}@users.example.com") };
        let mut claims = json!({"sub": user, "email": email, "email_verified": "true"});
        if admin {
            claims["scope"] = json!("admin");
        }
        let (raw_path, raw_query) = path.split_once('?').unwrap_or((path, ""));
        let mut event = json!({
            "version": "2.0",
            "routeKey": format!("{method} {raw_path}"),
            "rawPath": raw_path,
            "rawQueryString": raw_query,
            "headers": {"content-type": "application/json", "user-agent": "world"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "world", "domainName": "ag.example.com",
                "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "world"},
                "requestId": "world", "routeKey": format!("{method} {raw_path}"), "stage": "$default",
                "time": "02/Mar/2026:09:00:00 +0000", "timeEpoch": 0,
                "authorizer": {"jwt": {"claims": claims, "scopes": null}},
            },
            "isBase64Encoded": false,
        });
        for (name, value) in headers {
            event["headers"][*name] = json!(value);
        }
        if !raw_query.is_empty() {
            let query: serde_json::Map<String, Value> = url::form_urlencoded::parse(raw_query.as_bytes())
                .map(|(k, v)| (k.into_owned(), json!(v.into_owned())))
                .collect();
            event["queryStringParameters"] = Value::Object(query);
        }
        if let Some(body) = body {
            event["body"] = json!(body.to_string());
        }
        let request: lambda_http::request::LambdaRequest =
            serde_json::from_value(event).expect("the event is an API Gateway v2 request");
        request.into()
    }

    /// Calls the intake API; returns the status and the JSON body.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>, user: &str, admin: bool) -> (u16, Value) {
        let response = self.intake_http(Self::request(method, path, body, user, admin)).await;
        Self::reply(response)
    }

    /// Calls the approval API (`/actions/{id}/approve|reject`, `/approvals/{token}`).
    pub async fn decide(&self, id: ActionId, verb: &str, user: &str, admin: bool) -> (u16, Value) {
        let body = json!({"reason": "test"});
        let response =
            self.approval_http(Self::request("POST", &format!("/actions/{id}/{verb}"), Some(body), user, admin)).await;
        Self::reply(response)
    }

    /// The intake function's answer to a request (routing included).
    pub async fn intake_http(&self, req: lambda_http::Request) -> lambda_http::Response<lambda_http::Body> {
        actiongate::entry::api_intake::handle(&self.intake, req).await
    }

    /// The approval function's answer to a request (routing included).
    pub async fn approval_http(&self, req: lambda_http::Request) -> lambda_http::Response<lambda_http::Body> {
        let console =
            actiongate::adapters::apigw::console::Console::new(actiongate::adapters::apigw::console::SignIn::Dev);
        actiongate::entry::api_approval::handle(&self.approval, &console, req).await
    }

    pub fn reply(response: lambda_http::Response<lambda_http::Body>) -> (u16, Value) {
        let status = response.status().as_u16();
        let body = match response.body() {
            lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::String(t.clone())),
            lambda_http::Body::Binary(b) => serde_json::from_slice(b).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        (status, body)
    }

    /// Proposes an action as `user`; returns the status and body.
    pub async fn propose(&self, user: &str, body: Value) -> (u16, Value) {
        self.api("POST", "/actions", Some(body), user, false).await
    }

    pub async fn action(&self, id: ActionId) -> Action {
        self.store.get_action(id).await.unwrap().expect("the action exists")
    }

    /// Takes what was sent to the queue since the last call into the inbox.
    fn collect(&mut self) {
        let now = self.now();
        for (message, delay) in self.queue.take() {
            self.inbox.push((now + Duration::seconds(i64::from(delay)), message));
        }
        for message in self.wakeups.fire(now) {
            self.inbox.push((now, message));
        }
    }

    /// Delivers every message visible now to the executor, one at a time, oldest first, until
    /// none is left; a `Retry` comes back after SQS's visibility timeout.
    pub async fn deliver(&mut self) {
        for _ in 0..1000 {
            self.collect();
            let now = self.now();
            let Some(i) = self
                .inbox
                .iter()
                .enumerate()
                .filter(|(_, (at, _))| *at <= now)
                .min_by_key(|(_, (at, _))| *at)
                .map(|(i, _)| i)
            else {
                return;
            };
            let (_, message) = self.inbox.remove(i);
            let outcome = self.run_executor(&message).await;
            // Not acknowledged (a retry, or the process died): SQS delivers it again after the
            // visibility timeout.
            if matches!(outcome, Outcome::Retry(_)) || outcome == Self::crashed() {
                self.inbox.push((now + Duration::seconds(60), message.clone()));
            }
            self.outcomes.push((message, outcome));
        }
        panic!("delivery does not come to rest");
    }

    /// One executor invocation for `message`; a handler that "crashes" ends the invocation
    /// there, as a dead process would (nothing after the effect is recorded).
    pub async fn run_executor(&self, message: &ExecuteMessage) -> Outcome {
        let deadline = self.now() + Duration::seconds(30);
        let run = self.executor.run(message, deadline);
        tokio::pin!(run);
        loop {
            tokio::select! {
                outcome = &mut run => return outcome,
                _ = tokio::time::sleep(std::time::Duration::from_millis(2)) => {
                    let mut ledger = lock(&self.ledger);
                    if ledger.crashed {
                        ledger.crashed = false;
                        return Self::crashed();
                    }
                }
            }
        }
    }

    /// What [`World::run_executor`] answers when the handler "crashed" the process.
    pub fn crashed() -> Outcome {
        Outcome::Ignored("the executor crashed (test)".into())
    }

    pub async fn sweep(&mut self) -> SweepReport {
        let report = self.sweep.run(self.now() + Duration::seconds(60)).await;
        self.collect();
        report
    }

    /// Plays the infrastructure for `rounds` steps of `step`: deliver, sweep, move the clock.
    pub async fn settle(&mut self, rounds: usize, step: Duration) {
        for _ in 0..rounds {
            self.deliver().await;
            self.sweep().await;
            self.deliver().await;
            self.advance(step);
        }
    }

    /// The changes the targets saw for an action: every call, but a repeat of an idempotent
    /// call with the same key changes nothing and is left out.
    pub fn effects_of(&self, id: ActionId) -> Vec<Effect> {
        let ledger = lock(&self.ledger);
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for e in ledger.effects.iter().filter(|e| e.action_id == id) {
            if e.idempotent && seen.contains(&(e.step, e.key.clone())) {
                continue;
            }
            seen.push((e.step, e.key.clone()));
            out.push(e.clone());
        }
        out
    }

    /// Every call that reached a target for an action, repeats included.
    pub fn calls_of(&self, id: ActionId) -> Vec<Effect> {
        lock(&self.ledger).effects.iter().filter(|e| e.action_id == id).cloned().collect()
    }

    /// Scripts the next calls of (action, step).
    pub fn script(&self, id: ActionId, step: usize, behaviors: &[Behavior]) {
        lock(&self.ledger).script.insert((id, step), behaviors.iter().copied().collect());
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// A request body for `action_type` with a payload its validation accepts.
pub fn proposal(action_type: &str) -> Value {
    let payload = match action_type {
        "send_email" => json!({"to": ["bob@example.com"], "subject": "hello", "text": "hi"}),
        "gmail.label" => json!({"message_id": "m1", "label_ids": ["Label_1"]}),
        _ => json!({"message_id": "m1"}),
    };
    json!({"action_type": action_type, "payload": payload, "confidence": 0.95, "risk_score": 10})
}

/// The id in a creation answer.
pub fn id_of(body: &Value) -> ActionId {
    ActionId::parse(body["action_id"].as_str().unwrap_or_else(|| panic!("no action_id in {body}"))).unwrap()
}
