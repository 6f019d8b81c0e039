//! The local stack driven through its gateway while the counting proxy sees every AWS request
//! the functions make: requests and cost per lifecycle of an action, and throughput through
//! intake and the executor against the emulator's own floor.

use super::cost::{self, Price};
use super::proxy::{CountingProxy, Usage};
use super::APPROVER;
use crate::stack::LocalStack;
use actiongate::adapters::aws::dynamo::DynamoStore;
use actiongate::domain::{ActionId, Status, UserId};
use actiongate::ports::store::*;
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Gmail message the benchmark's Gmail actions change (seeded in the fake).
const MESSAGE: &str = "bench-message";
/// How long the functions must be quiet before a lifecycle counts as finished.
const QUIET: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    AutoAction,
    ApprovedAction,
    PlanWithWait,
    Rollback,
}

impl Lifecycle {
    pub const ALL: [Lifecycle; 4] =
        [Lifecycle::AutoAction, Lifecycle::ApprovedAction, Lifecycle::PlanWithWait, Lifecycle::Rollback];

    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::AutoAction => "tier-1 auto action",
            Lifecycle::ApprovedAction => "tier-2 approved action",
            Lifecycle::PlanWithWait => "3-step plan with a wait",
            Lifecycle::Rollback => "rollback",
        }
    }

    /// What the lifecycle does, from the first request to the final state.
    pub fn description(self) -> &'static str {
        match self {
            Lifecycle::AutoAction => "`POST /actions` `gmail.flag` → queued → executed → `completed`",
            Lifecycle::ApprovedAction => {
                "`POST /actions` `http_request` (approval mail) → `POST /actions/{id}/approve` → executed → `completed`"
            }
            Lifecycle::PlanWithWait => {
                "`POST /actions` plan `gmail.label`, `wait_for PT1S`, `gmail.archive` → wake-up schedule → `completed`"
            }
            Lifecycle::Rollback => "`POST /actions/{id}/rollback` of a completed `gmail.flag` → `rolled_back`",
        }
    }

    /// Invocations through API Gateway.
    pub fn api_calls(self) -> f64 {
        match self {
            Lifecycle::ApprovedAction => 2.0,
            _ => 1.0,
        }
    }

    /// The states a Step Functions Standard workflow of the same flow would enter, each one a
    /// billed state transition (the minimum: no retries, no error branches).
    pub fn step_functions_states(self) -> &'static [&'static str] {
        match self {
            Lifecycle::AutoAction => {
                &["Validate+Policy (λ)", "Tier? (Choice)", "Store (DDB)", "Execute (λ)", "Record (DDB)", "Done"]
            }
            Lifecycle::ApprovedAction => &[
                "Validate+Policy (λ)",
                "Tier? (Choice)",
                "Store (DDB)",
                "Ask approver (λ .waitForTaskToken)",
                "Approved? (Choice)",
                "Execute (λ)",
                "Record (DDB)",
                "Done",
            ],
            Lifecycle::PlanWithWait => &[
                "Validate+Policy (λ)",
                "Tier? (Choice)",
                "Store (DDB)",
                "Step 1 (λ)",
                "Record (DDB)",
                "Wait",
                "Step 3 (λ)",
                "Record (DDB)",
                "Done",
            ],
            Lifecycle::Rollback => &["Load snapshots (DDB)", "Undo step (λ)", "Record (DDB)", "Done"],
        }
    }
}

/// What one lifecycle asked of AWS, averaged over its runs.
#[derive(Debug, Clone)]
pub struct Measured {
    pub lifecycle: Lifecycle,
    pub usage: Usage,
    /// The functions' AWS requests in each measured run.
    pub totals: Vec<f64>,
}

/// Dollars per million lifecycles, by service.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    pub dynamodb: f64,
    pub sqs: f64,
    pub ses: f64,
    pub scheduler: f64,
    pub lambda: f64,
    pub api_gateway: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.dynamodb + self.sqs + self.ses + self.scheduler + self.lambda + self.api_gateway
    }
}

impl Measured {
    /// The fewest and most requests of a run.
    pub fn range(&self) -> (f64, f64) {
        self.totals.iter().fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)))
    }

    pub fn dynamodb_reads(&self) -> f64 {
        self.usage.count("DynamoDB", cost::dynamodb_reads)
    }

    pub fn dynamodb_writes(&self) -> f64 {
        self.usage.count("DynamoDB", |op| !cost::dynamodb_reads(op))
    }

    pub fn sqs(&self) -> f64 {
        self.usage.count("SQS", |_| true)
    }

    pub fn ses(&self) -> f64 {
        self.usage.count("SES", |_| true)
    }

    pub fn scheduler(&self) -> f64 {
        self.usage.count("Scheduler", |_| true)
    }

    /// Schedules created: each fires once, and only firing is billed.
    pub fn schedules_fired(&self) -> f64 {
        self.usage.count("Scheduler", |op| op == "CreateSchedule")
    }

    /// Executor invocations: one per message the functions queued or scheduled (at this rate
    /// the event source mapping delivers each message in a batch of its own).
    pub fn deliveries(&self) -> f64 {
        self.usage.count("SQS", |op| op == "SendMessage") + self.schedules_fired()
    }

    pub fn lambda_invocations(&self) -> f64 {
        self.lifecycle.api_calls() + self.deliveries()
    }

    /// The event source mapping's own SQS requests: a receive and a delete per delivery.
    pub fn event_source_requests(&self) -> f64 {
        2.0 * self.deliveries()
    }

    /// Every billable request of the lifecycle: the functions' own (counted), the API Gateway
    /// requests, the Lambda invocations and the event source mapping's SQS requests.
    pub fn billable_requests(&self) -> f64 {
        self.usage.total() + self.lifecycle.api_calls() + self.lambda_invocations() + self.event_source_requests()
    }

    pub fn cost_per_million(&self) -> Cost {
        let price = |p: Price, n: f64| p.per_million * n;
        Cost {
            dynamodb: price(cost::DYNAMODB_READ, self.usage.dynamodb.read)
                + price(cost::DYNAMODB_WRITE, self.usage.dynamodb.write),
            sqs: price(cost::SQS, self.sqs() + self.event_source_requests()),
            ses: price(cost::SES, self.usage.emails),
            scheduler: price(cost::SCHEDULER, self.schedules_fired()),
            lambda: price(cost::LAMBDA_REQUEST, self.lambda_invocations()),
            api_gateway: price(cost::API_GATEWAY, self.lifecycle.api_calls()),
        }
    }

    /// The state transitions alone of a Step Functions Standard workflow, per million.
    pub fn step_functions_cost_per_million(&self) -> f64 {
        cost::STEP_FUNCTIONS.per_million * self.lifecycle.step_functions_states().len() as f64
    }
}

/// Drives the local stack through its gateway and reads state straight from the emulator.
pub struct Driver<'a> {
    stack: &'a LocalStack,
    proxy: &'a CountingProxy,
    http: reqwest::Client,
    store: DynamoStore,
    owner: String,
}

impl<'a> Driver<'a> {
    /// A driver acting as a fresh user, whose Google token is stored and whose Gmail message
    /// exists in the fake.
    pub async fn new(stack: &'a LocalStack, proxy: &'a CountingProxy, name: &str) -> Result<Self> {
        let store = DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&stack.sdk),
            stack.provisioned.table("ActionsTable")?,
            stack.provisioned.table("AuditTable")?,
        );
        let owner = format!("bench-{name}-{}", chrono::Utc::now().timestamp_millis());
        let user = UserId::parse(&owner).ok_or_else(|| anyhow!("bad user id {owner}"))?;
        store
            .set_google_token(&user, "ya29.bench", "bench", chrono::Utc::now())
            .await
            .map_err(|e| anyhow!("storing the Google token: {e}"))?;
        stack.fakes.seed_message(MESSAGE, &["INBOX"]);
        // No kept-alive connections to the gateway: tiny_http can leave a new connection waiting
        // behind open ones, which the concurrent throughput run would hit.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build()?;
        Ok(Self { stack, proxy, http, store, owner })
    }

    /// What `lifecycle` asks of AWS: one unmeasured run (so every function instance is warm and
    /// has its policy cached), then the average of `runs` measured ones.
    pub async fn measure(&self, lifecycle: Lifecycle, runs: usize) -> Result<Measured> {
        let mut usages = Vec::new();
        for run in 0..=runs {
            let prepared = self.prepare(lifecycle).await?;
            self.proxy.settle(QUIET).await;
            let before = self.proxy.usage();
            self.run(lifecycle, prepared).await.with_context(|| format!("{} (run {run})", lifecycle.name()))?;
            self.proxy.settle(QUIET).await;
            if run > 0 {
                usages.push(self.proxy.usage().since(&before));
            }
        }
        Ok(Measured { lifecycle, totals: usages.iter().map(Usage::total).collect(), usage: Usage::mean(&usages) })
    }

    /// The unmeasured part: a completed action to roll back.
    async fn prepare(&self, lifecycle: Lifecycle) -> Result<Option<ActionId>> {
        if lifecycle != Lifecycle::Rollback {
            return Ok(None);
        }
        let id = self.create(&flag()).await?;
        self.wait_for(id, Status::Completed).await?;
        Ok(Some(id))
    }

    async fn run(&self, lifecycle: Lifecycle, prepared: Option<ActionId>) -> Result<()> {
        match (lifecycle, prepared) {
            (Lifecycle::AutoAction, _) => {
                let id = self.create(&flag()).await?;
                self.wait_for(id, Status::Completed).await
            }
            (Lifecycle::ApprovedAction, _) => {
                let url = format!("{}/hook/ok-bench-{}", self.stack.fakes.url, chrono::Utc::now().timestamp_micros());
                let id = self
                    .create(&json!({"action_type": "http_request", "approver": APPROVER,
                                    "payload": {"method": "POST", "url": url, "body": {"bench": true}}}))
                    .await?;
                self.wait_for(id, Status::AwaitingApproval).await?;
                self.call("POST", &format!("/actions/{id}/approve"), APPROVER, &json!({"reason": "bench"})).await?;
                self.wait_for(id, Status::Completed).await
            }
            (Lifecycle::PlanWithWait, _) => {
                let id = self
                    .create(&json!({"confidence": 0.9, "steps": [
                        {"action_type": "gmail.label", "payload": {"message_id": MESSAGE, "label_ids": ["Label_bench"]}},
                        {"wait_for": "PT1S"},
                        {"action_type": "gmail.archive", "payload": {"message_id": MESSAGE}},
                    ]}))
                    .await?;
                self.wait_for(id, Status::Completed).await
            }
            (Lifecycle::Rollback, Some(id)) => {
                self.call("POST", &format!("/actions/{id}/rollback"), &self.owner, &json!({"reason": "bench"})).await?;
                self.wait_for(id, Status::RolledBack).await
            }
            (Lifecycle::Rollback, None) => bail!("nothing prepared to roll back"),
        }
    }

    async fn call(&self, method: &str, path: &str, user: &str, body: &Value) -> Result<Value> {
        call(&self.http, &self.stack.gateway_url, method, path, user, body).await
    }

    async fn create(&self, body: &Value) -> Result<ActionId> {
        create(&self.http, &self.stack.gateway_url, &self.owner, body).await
    }

    /// Polls the store (not the API, whose reads the proxy would count) until `id` is `wanted`.
    async fn wait_for(&self, id: ActionId, wanted: Status) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let action = self.store.get_action(id).await?.ok_or_else(|| anyhow!("action {id} vanished"))?;
            if action.status == wanted {
                return Ok(());
            }
            let stuck = action.status.is_terminal() || (action.status == Status::Failed && wanted != Status::Failed);
            ensure!(!stuck && Instant::now() < deadline, "{id} is {}, not {}", action.status.as_str(), wanted.as_str());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Throughput of `actions` tier-1 actions sent `concurrency` at a time: first through intake
    /// with deliveries held (so the queue fills), then through the executor once released; and
    /// the emulator's floor, the same number of raw PutItem + SendMessage + UpdateItem calls at
    /// the same concurrency through the same proxy, plain and with each write a transaction.
    pub async fn throughput(&self, actions: usize, concurrency: usize) -> Result<Throughput> {
        self.proxy.set_sizing(false);
        self.stack.hold_deliveries(true);
        let started = Instant::now();
        let created = concurrently(actions, concurrency, {
            let (http, gateway, owner) = (self.http.clone(), self.stack.gateway_url.clone(), self.owner.clone());
            move |_| {
                let (http, gateway, owner) = (http.clone(), gateway.clone(), owner.clone());
                async move {
                    let created = call(&http, &gateway, "POST", "/actions", &owner, &flag()).await?;
                    ensure!(created["status"] == "queued", "a tier-1 action was not queued: {created}");
                    Ok(())
                }
            }
        })
        .await;
        let intake = started.elapsed();
        let released = chrono::Utc::now();
        self.stack.hold_deliveries(false);
        created?;
        let last = self.all_completed(actions, released).await?;
        let executor = (last - released).to_std().unwrap_or_default();

        let floor = self.floor(actions, concurrency, Writes::Plain).await?;
        let floor_transactional = self.floor(actions, concurrency, Writes::Transactional).await?;
        self.proxy.set_sizing(true);
        let rate = |d: Duration| actions as f64 / d.as_secs_f64().max(1e-9);
        Ok(Throughput {
            actions,
            concurrency,
            intake: rate(intake),
            executor: rate(executor),
            floor: rate(floor),
            floor_transactional: rate(floor_transactional),
        })
    }

    /// Waits until `n` of the owner's actions (all automatic, released at `released`) have
    /// completed, and returns when the last one finished. While it waits it reads only the
    /// owner's outcome counters, which the executor updates in the transaction that completes an
    /// action: one `GetItem` a poll. The emulator answers one request at a time, so a poll that
    /// listed the actions (a query returning up to all of them) would slow the executor it
    /// times. The actions are listed once, at the end, for the time of the last completion.
    async fn all_completed(
        &self,
        n: usize,
        released: chrono::DateTime<chrono::Utc>,
    ) -> Result<chrono::DateTime<chrono::Utc>> {
        let user = UserId::parse(&self.owner).ok_or_else(|| anyhow!("bad user id"))?;
        let scope = actiongate::adapters::aws::dynamo::keys::user_stats_scope(&user);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let (mut executed, mut failed) = (0, 0);
            for day in days_between(released, chrono::Utc::now()) {
                let counters = self.store.daily_stats(&scope, day).await?;
                executed += counters.get("auto_executed").copied().unwrap_or(0);
                failed += counters.get("failed").copied().unwrap_or(0);
            }
            ensure!(failed == 0, "{failed} of the {n} actions failed");
            if executed as usize >= n {
                break;
            }
            ensure!(Instant::now() < deadline, "only {executed} of {n} actions completed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut last = None;
        let mut cursor = None;
        loop {
            let page = self
                .store
                .list_actions(&user, Some(Status::Completed), 100, cursor.as_deref())
                .await?
                .map_err(|_| anyhow!("bad cursor"))?;
            last = page.actions.iter().map(|a| a.updated_at).chain(last).max();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        last.ok_or_else(|| anyhow!("nothing completed"))
    }

    async fn floor(&self, actions: usize, concurrency: usize, writes: Writes) -> Result<Duration> {
        let sdk = crate::emulator::sdk_config_for(&self.proxy.url).await;
        let (ddb, sqs) = (aws_sdk_dynamodb::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk));
        let queue = sqs.create_queue().queue_name("bench-floor").send().await?;
        let queue = queue.queue_url.ok_or_else(|| anyhow!("no queue url"))?;
        let table = self.stack.provisioned.table("ActionsTable")?.to_owned();
        let started = Instant::now();
        concurrently(actions, concurrency, move |i| {
            let (ddb, sqs, queue, table) = (ddb.clone(), sqs.clone(), queue.clone(), table.clone());
            async move { raw_action(&ddb, &sqs, &queue, &table, i, writes).await }
        })
        .await?;
        Ok(started.elapsed())
    }
}

/// How the floor writes: plain requests, or each write as a one-item transaction (as the
/// functions write; moto copies every table a transaction touches before applying it).
#[derive(Debug, Clone, Copy)]
enum Writes {
    Plain,
    Transactional,
}

/// Actions per second through each part, and the emulator's floor.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub actions: usize,
    pub concurrency: usize,
    pub intake: f64,
    pub executor: f64,
    pub floor: f64,
    pub floor_transactional: f64,
}

/// A tier-1 action: flag the benchmark's Gmail message.
fn flag() -> Value {
    json!({"action_type": "gmail.flag", "payload": {"message_id": MESSAGE}, "confidence": 0.9})
}

/// The store's own work for one action, done directly: put it, queue it, update it.
async fn raw_action(
    ddb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    table: &str,
    i: usize,
    writes: Writes,
) -> Result<()> {
    use actiongate::adapters::aws::dynamo::keys::{PK, SK};
    use aws_sdk_dynamodb::types::AttributeValue::S;
    use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
    let pk = format!("BENCH#{writes:?}#{i}");
    let key = HashMap::from([(PK.to_owned(), S(pk)), (SK.to_owned(), S("FLOOR".into()))]);
    let mut item = key.clone();
    item.insert("doc".to_owned(), S("x".repeat(1000)));
    let (set, names, values) = (
        "SET #s = :s",
        HashMap::from([("#s".to_owned(), "status".to_owned())]),
        HashMap::from([(":s".to_owned(), S("completed".into()))]),
    );
    let transact = |item: TransactWriteItem| ddb.transact_write_items().transact_items(item).send();
    match writes {
        Writes::Plain => {
            ddb.put_item().table_name(table).set_item(Some(item)).send().await?;
            sqs.send_message().queue_url(queue).message_body(i.to_string()).send().await?;
            ddb.update_item()
                .table_name(table)
                .set_key(Some(key))
                .update_expression(set)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .send()
                .await?;
        }
        Writes::Transactional => {
            let put = Put::builder().table_name(table).set_item(Some(item)).build()?;
            transact(TransactWriteItem::builder().put(put).build()).await?;
            sqs.send_message().queue_url(queue).message_body(i.to_string()).send().await?;
            let update = Update::builder()
                .table_name(table)
                .set_key(Some(key))
                .update_expression(set)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build()?;
            transact(TransactWriteItem::builder().update(update).build()).await?;
        }
    }
    Ok(())
}

/// Runs `task(0..n)` with at most `concurrency` at a time; the first error, if any.
async fn concurrently<F, Fut>(n: usize, concurrency: usize, task: F) -> Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let task = Arc::new(task);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, task) = (Arc::clone(&next), Arc::clone(&task));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                task(i).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

async fn call(
    http: &reqwest::Client,
    gateway: &str,
    method: &str,
    path: &str,
    user: &str,
    body: &Value,
) -> Result<Value> {
    let response = http
        .request(method.parse()?, format!("{gateway}{path}"))
        .header("authorization", format!("Bearer dev:{user}"))
        .json(body)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(status.is_success(), "{method} {path} answered {status}: {body}");
    Ok(body)
}

/// The UTC days (what the outcome counters are kept by) from `from`'s to `to`'s.
fn days_between(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> Vec<chrono::NaiveDate> {
    let (mut day, last) = (from.date_naive(), to.date_naive());
    let mut days = vec![day];
    while day < last {
        day = day.succ_opt().unwrap_or(last);
        days.push(day);
    }
    days
}

async fn create(http: &reqwest::Client, gateway: &str, owner: &str, body: &Value) -> Result<ActionId> {
    let created = call(http, gateway, "POST", "/actions", owner, body).await?;
    created["action_id"].as_str().and_then(ActionId::parse).ok_or_else(|| anyhow!("no action_id in {created}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_days_between_two_times_are_every_utc_day_they_span() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc);
        let days_between = |from, to| -> Vec<String> {
            days_between(from, to).iter().map(|d| d.format("%Y-%m-%d").to_string()).collect()
        };
        assert_eq!(days_between(at("2026-11-22T10:00:00Z"), at("2026-11-22T10:00:30Z")), ["2026-11-22"]);
        assert_eq!(days_between(at("2026-12-31T23:59:50Z"), at("2027-01-01T00:00:20Z")), ["2026-12-31", "2027-01-01"]);
        // A clock read before the release (it never should be) still gives the release's day.
        assert_eq!(days_between(at("2026-11-22T10:00:00Z"), at("2026-11-21T10:00:00Z")), ["2026-11-22"]);
    }
}
