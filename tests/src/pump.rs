//! What AWS does between the services and moto does not: an SQS event source mapping that
//! delivers work-queue messages to the executor as real SQS events (through cargo lambda,
//! honouring `batchItemFailures`), and EventBridge Scheduler firing due one-time schedules
//! into their queue target.

use anyhow::{anyhow, Result};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How soon a failed or crashed delivery is visible again (AWS waits the queue's visibility
/// timeout; locally that would only slow things down).
const RETRY_VISIBILITY_SECS: i32 = 2;

pub struct Pumps {
    stop: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
}

impl Pumps {
    /// Holds (or resumes) deliveries and schedule firing, as if the event source mapping and
    /// the scheduler were paused: messages and due schedules wait until released.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::Release);
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

pub struct PumpConfig {
    pub sdk: aws_config::SdkConfig,
    pub http: reqwest::Client,
    pub invoke_url: String,
    pub executor: String,
    pub work_queue_url: String,
    pub work_queue_arn: String,
    pub schedule_groups: Vec<String>,
    /// queue ARN → URL, for schedule targets.
    pub queues_by_arn: BTreeMap<String, String>,
}

pub fn start(config: PumpConfig) -> Pumps {
    let stop = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicBool::new(false));
    let config = Arc::new(config);
    {
        let (config, stop, held) = (Arc::clone(&config), Arc::clone(&stop), Arc::clone(&held));
        tokio::spawn(async move {
            let sqs = aws_sdk_sqs::Client::new(&config.sdk);
            while !stop.load(Ordering::Acquire) {
                if held.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else if let Err(e) = deliver_once(&config, &sqs, &held).await {
                    tracing::warn!(error = %format!("{e:#}"), "work-queue pump");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
    }
    {
        let (config, stop, held) = (Arc::clone(&config), Arc::clone(&stop), Arc::clone(&held));
        tokio::spawn(async move {
            let scheduler = aws_sdk_scheduler::Client::new(&config.sdk);
            let sqs = aws_sdk_sqs::Client::new(&config.sdk);
            while !stop.load(Ordering::Acquire) {
                if !held.load(Ordering::Acquire) {
                    if let Err(e) = fire_due_schedules(&config, &scheduler, &sqs).await {
                        tracing::warn!(error = %format!("{e:#}"), "scheduler pump");
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    Pumps { stop, held }
}

/// Plays the schedules that invoke a function (the sweep's `rate(...)`), faster locally.
pub fn start_timer(http: reqwest::Client, invoke_url: String, binary: String, inputs: Vec<String>, every: Duration) {
    tokio::spawn(async move {
        let url = format!("{invoke_url}/2015-03-31/functions/{binary}/invocations");
        loop {
            tokio::time::sleep(every).await;
            for input in &inputs {
                let body: Value = serde_json::from_str(input).unwrap_or(Value::Null);
                match http.post(&url).json(&body).send().await {
                    Ok(r) => {
                        let report = r.text().await.unwrap_or_default();
                        tracing::debug!(%binary, %report, "scheduled invocation");
                    }
                    Err(e) => tracing::warn!(%binary, error = %e, "scheduled invocation failed"),
                }
            }
        }
    });
}

/// The SQS event the event source mapping would deliver for `messages` of the queue `queue_arn`.
pub fn sqs_event(messages: &[Message], queue_arn: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: Map<String, Value> =
                m.attributes().into_iter().flatten().map(|(k, v)| (k.as_str().to_owned(), json!(v))).collect();
            json!({
                "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                "attributes": attributes, "messageAttributes": {}, "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

async fn deliver_once(config: &PumpConfig, sqs: &aws_sdk_sqs::Client, held: &AtomicBool) -> Result<()> {
    let out = sqs
        .receive_message()
        .queue_url(&config.work_queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    let messages = out.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(());
    }
    if held.load(Ordering::Acquire) {
        // Held while this long poll was waiting: put the messages back untouched.
        for receipt in messages.iter().filter_map(|m| m.receipt_handle()) {
            let _ = sqs
                .change_message_visibility()
                .queue_url(&config.work_queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await;
        }
        return Ok(());
    }
    let url = format!("{}/2015-03-31/functions/{}/invocations", config.invoke_url, config.executor);
    let result = config.http.post(&url).json(&sqs_event(&messages, &config.work_queue_arn)).send().await;
    let failed: Option<Vec<String>> = match result {
        Ok(response) if !response.headers().contains_key("x-amz-function-error") => {
            match response.json::<Value>().await {
                Ok(v) if v.get("errorType").is_none() => Some(
                    v.get("batchItemFailures")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f.get("itemIdentifier").and_then(Value::as_str).map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            }
        }
        _ => None,
    };
    for m in &messages {
        let (Some(id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else { continue };
        // A crashed invocation fails the whole batch, as the event source mapping would.
        let retry = failed.as_ref().is_none_or(|f| f.iter().any(|x| x == id));
        if retry {
            let _ = sqs
                .change_message_visibility()
                .queue_url(&config.work_queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(RETRY_VISIBILITY_SECS)
                .send()
                .await;
        } else {
            let _ = sqs.delete_message().queue_url(&config.work_queue_url).receipt_handle(receipt).send().await;
        }
    }
    Ok(())
}

async fn fire_due_schedules(
    config: &PumpConfig,
    scheduler: &aws_sdk_scheduler::Client,
    sqs: &aws_sdk_sqs::Client,
) -> Result<()> {
    let now = chrono::Utc::now();
    for group in &config.schedule_groups {
        let listed = scheduler
            .list_schedules()
            .group_name(group)
            .send()
            .await
            .map_err(|e| anyhow!("{}", aws_sdk_scheduler::error::DisplayErrorContext(e)))?;
        for summary in listed.schedules() {
            let Some(name) = summary.name() else { continue };
            let schedule = scheduler
                .get_schedule()
                .group_name(group)
                .name(name)
                .send()
                .await
                .map_err(|e| anyhow!("{}", aws_sdk_scheduler::error::DisplayErrorContext(e)))?;
            let due = schedule
                .schedule_expression()
                .and_then(actiongate::adapters::aws::scheduler::parse_at)
                .is_some_and(|at| at <= now);
            if !due {
                continue;
            }
            let target = schedule.target().ok_or_else(|| anyhow!("schedule {name} has no target"))?;
            let url = config
                .queues_by_arn
                .get(target.arn())
                .ok_or_else(|| anyhow!("schedule {name} targets unknown {}", target.arn()))?;
            sqs.send_message()
                .queue_url(url)
                .message_body(target.input().unwrap_or("{}"))
                .send()
                .await
                .map_err(|e| anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            // ActionAfterCompletion DELETE.
            let _ = scheduler.delete_schedule().group_name(group).name(name).send().await;
        }
    }
    Ok(())
}
