//! Each release binary on its own, as Lambda runs it: init time next to the hello-world
//! baseline, peak memory while it handles a batch of ten events, and its size.

use super::runtime_api::LambdaProcess;
use super::{APPROVER, HELLO};
use crate::gateway::{self, Incoming};
use crate::pump;
use crate::stack::LocalStack;
use crate::template::Route;
use actiongate::telemetry::{parse_steps, STARTUP_MESSAGE, STARTUP_TARGET};
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Events in each function's batch.
pub const BATCH: usize = 10;

/// Where `cargo build --release` puts `binary`.
pub fn release_binary(binary: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    target.join("release").join(binary)
}

fn log_file(binary: &str) -> PathBuf {
    crate::workspace_root().join(format!(".local/bench-{binary}.log"))
}

/// A release binary as built: its size and how it is linked.
#[derive(Debug, Clone, Copy)]
pub struct BinaryFile {
    pub bytes: u64,
    /// Position-independent (ELF type `DYN`) rather than linked at a fixed address (`EXEC`).
    pub pie: bool,
}

/// Each release binary's size and link.
pub fn binary_files(binaries: &[&str]) -> Result<BTreeMap<String, BinaryFile>> {
    binaries
        .iter()
        .map(|b| {
            let path = release_binary(b);
            let bytes = std::fs::read(&path).with_context(|| format!("{} (make bench builds it)", path.display()))?;
            let pie = elf_is_pie(&bytes).ok_or_else(|| anyhow!("{} is not an ELF executable", path.display()))?;
            Ok(((*b).to_owned(), BinaryFile { bytes: bytes.len() as u64, pie }))
        })
        .collect()
}

/// Whether an ELF executable is position-independent, from its header's `e_type` (2 `EXEC`,
/// 3 `DYN`); `None` for anything else.
fn elf_is_pie(file: &[u8]) -> Option<bool> {
    if file.get(..4)? != b"\x7fELF" {
        return None;
    }
    let e_type = match file.get(5)? {
        1 => u16::from_le_bytes([*file.get(16)?, *file.get(17)?]),
        _ => u16::from_be_bytes([*file.get(16)?, *file.get(17)?]),
    };
    match e_type {
        2 => Some(false),
        3 => Some(true),
        _ => None,
    }
}

/// The init times of `runs` cold starts of each binary (see [`in_turns`]).
pub async fn init_times(
    binaries: &[&str],
    env: &[(String, String)],
    runs: usize,
) -> Result<BTreeMap<String, Vec<Duration>>> {
    in_turns(binaries, env, runs, |binary| Ok(log_file(binary)), |_, init, _| init).await
}

/// One start, itemized: its init time and the steps of the function's setup in `main`, as the
/// function timed them (`actiongate::telemetry::Startup`; none for hello).
#[derive(Debug, Clone)]
pub struct ItemizedStart {
    pub init: Duration,
    pub steps: Vec<(String, Duration)>,
}

impl ItemizedStart {
    /// What the function's own timing does not cover: the exec, the dynamic loader, the Rust and
    /// Tokio start, the runtime client's first poll, and the logging of the steps.
    pub fn outside_setup(&self) -> Duration {
        self.init.saturating_sub(self.steps.iter().map(|(_, took)| *took).sum())
    }
}

/// `runs` starts of each binary (see [`in_turns`]) with the functions' startup event turned on
/// (`RUST_LOG` gains `actiongate::startup=debug`), each read back from a log of its own. These
/// are separate from the starts [`init_times`] times, which log nothing at start.
pub async fn itemized_starts(
    binaries: &[&str],
    env: &[(String, String)],
    runs: usize,
) -> Result<BTreeMap<String, Vec<ItemizedStart>>> {
    let level = env.iter().find(|(name, _)| name == "RUST_LOG").map_or("info", |(_, value)| value.as_str());
    let mut env = env.to_vec();
    env.retain(|(name, _)| name != "RUST_LOG");
    env.push(("RUST_LOG".into(), format!("{level},{STARTUP_TARGET}=debug")));
    let fresh_log = |binary: &str| {
        let log = crate::workspace_root().join(format!(".local/bench-startup-{binary}.log"));
        match std::fs::remove_file(&log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(log),
        }
    };
    in_turns(binaries, &env, runs, fresh_log, |binary, init, log| {
        let steps = startup_steps(&std::fs::read_to_string(log).unwrap_or_default());
        if binary != HELLO && steps.is_none() {
            bail!("{binary} logged no startup steps (log: {})", log.display());
        }
        Ok(ItemizedStart { init: init?, steps: steps.unwrap_or_default() })
    })
    .await
}

/// `runs` cold starts of each binary under the Runtime API, taken in turns so that background
/// noise spreads evenly, after one unmeasured start each (which reads it into the page cache):
/// `measure` reads each one from its init time and its log (`log` names it before the start).
async fn in_turns<T>(
    binaries: &[&str],
    env: &[(String, String)],
    runs: usize,
    log: impl Fn(&str) -> Result<PathBuf>,
    measure: impl Fn(&str, Result<Duration>, &Path) -> Result<T>,
) -> Result<BTreeMap<String, Vec<T>>> {
    let mut measured: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for round in 0..=runs {
        for &binary in binaries {
            let log = log(binary)?;
            let process = LambdaProcess::start(&release_binary(binary), binary, env, &log)?;
            let init = process.init_time().await.with_context(|| format!("{binary} (log: {})", log.display()));
            process.stop();
            let start = measure(binary, init, &log);
            if round > 0 {
                measured.entry(binary.to_owned()).or_default().push(start?);
            }
        }
    }
    Ok(measured)
}

/// The steps of the startup event in a function's JSON log.
fn startup_steps(log: &str) -> Option<Vec<(String, Duration)>> {
    log.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).find_map(|event| {
        match (event["message"].as_str(), event["steps"].as_str()) {
            (Some(STARTUP_MESSAGE), Some(steps)) => parse_steps(steps),
            _ => None,
        }
    })
}

/// Peak resident memory (KiB) of each function while it handles a batch of ten events, on the
/// stack's emulator: intake creates ten webhook actions needing approval, approval approves
/// them, the executor runs them as one ten-record SQS event, rollback undoes them (direct
/// invocations), and the sweep runs ten times. Deliveries are held meanwhile, so the queued
/// work comes to this executor.
pub async fn peak_memory(stack: &LocalStack) -> Result<BTreeMap<String, u64>> {
    stack.hold_deliveries(true);
    let peaks = batches(stack).await;
    stack.hold_deliveries(false);
    peaks
}

async fn batches(stack: &LocalStack) -> Result<BTreeMap<String, u64>> {
    let env = &stack.function_env;
    let routes: Vec<(Route, String)> = stack
        .template
        .functions
        .iter()
        .flat_map(|f| f.routes.iter().map(move |r| (r.clone(), f.binary.clone())))
        .collect();
    let owner = format!("bench-memory-{}", chrono::Utc::now().timestamp_millis());
    let mut peaks = BTreeMap::new();
    let start = |binary: &str| LambdaProcess::start(&release_binary(binary), binary, env, &log_file(binary));

    let intake = start("intake")?;
    let mut ids = Vec::new();
    for i in 0..BATCH {
        let hook = |name: &str| format!("{}/hook/ok-memory-{name}-{i}", stack.fakes.url);
        let body = json!({"action_type": "http_request", "approver": APPROVER, "payload": {
            "method": "POST", "url": hook("do"), "body": {"n": i}, "rollback": {"method": "POST", "url": hook("undo")}}});
        let created = call(&intake, &routes, "POST", "/actions", &owner, &body).await?;
        ids.push(created["action_id"].as_str().ok_or_else(|| anyhow!("no action_id in {created}"))?.to_owned());
    }
    peaks.insert("intake".to_owned(), intake.peak_rss_kib()?);
    intake.stop();

    let approval = start("approval")?;
    for id in &ids {
        call(&approval, &routes, "POST", &format!("/actions/{id}/approve"), APPROVER, &json!({"reason": "bench"}))
            .await?;
    }
    peaks.insert("approval".to_owned(), approval.peak_rss_kib()?);
    approval.stop();

    let executor = start("executor")?;
    let (queue_url, queue_arn) =
        stack.provisioned.queues.get("WorkQueue").cloned().ok_or_else(|| anyhow!("no WorkQueue provisioned"))?;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let messages = receive(&sqs, &queue_url, BATCH).await?;
    let report = executor.invoke(&pump::sqs_event(&messages, &queue_arn)).await?;
    ensure!(report["batchItemFailures"].as_array().is_none_or(Vec::is_empty), "the executor failed some: {report}");
    for receipt in messages.iter().filter_map(|m| m.receipt_handle()) {
        sqs.delete_message().queue_url(&queue_url).receipt_handle(receipt).send().await?;
    }
    peaks.insert("executor".to_owned(), executor.peak_rss_kib()?);
    executor.stop();

    let rollback = start("rollback")?;
    for id in &ids {
        let undone = rollback.invoke(&json!({"action_id": id, "partial": true})).await?;
        ensure!(undone["status"] == "rolled_back", "rollback of {id}: {undone}");
    }
    peaks.insert("rollback".to_owned(), rollback.peak_rss_kib()?);
    rollback.stop();

    let sweep = start("sweep")?;
    let input = stack
        .template
        .functions
        .iter()
        .find(|f| f.binary == "sweep")
        .and_then(|f| f.schedule_inputs.first())
        .map_or(Ok(json!({})), |i| serde_json::from_str(i))?;
    for _ in 0..BATCH {
        let report = sweep.invoke(&input).await?;
        ensure!(report.get("errorType").is_none(), "sweep: {report}");
    }
    peaks.insert("sweep".to_owned(), sweep.peak_rss_kib()?);
    sweep.stop();
    Ok(peaks)
}

/// Sends an API request to `process` as API Gateway would, through the local gateway's routing
/// and event building; returns the JSON body of a 2xx answer.
async fn call(
    process: &LambdaProcess,
    routes: &[(Route, String)],
    method: &str,
    path: &str,
    user: &str,
    body: &Value,
) -> Result<Value> {
    let request = Incoming {
        method: method.to_owned(),
        url: path.to_owned(),
        headers: vec![
            ("authorization".to_owned(), format!("Bearer dev:{user}")),
            ("content-type".to_owned(), "application/json".to_owned()),
        ],
        body: body.to_string().into_bytes(),
    };
    let (binary, event) = gateway::route_event(routes, &request, 0, None, true)
        .map_err(|reply| anyhow!("the gateway answers {method} {path} with {} itself", reply.status))?;
    ensure!(binary == process.name, "{method} {path} is served by {binary}, not {}", process.name);
    let response = process.invoke(&event).await?;
    let status = response["statusCode"].as_u64().unwrap_or_default();
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        bail!("{method} {path} answered {status}: {body}");
    }
    Ok(body)
}

/// Receives exactly `n` messages from the queue (they stay invisible until deleted).
async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str, n: usize) -> Result<Vec<aws_sdk_sqs::types::Message>> {
    let mut messages = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while messages.len() < n {
        ensure!(std::time::Instant::now() < deadline, "only {} of {n} messages arrived", messages.len());
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages((n - messages.len()).min(10) as i32)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await?;
        messages.extend(out.messages.unwrap_or_default());
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_elf_type_tells_pie_from_fixed_address() {
        let header = |data: u8, e_type: [u8; 2]| {
            let mut h = vec![0x7f, b'E', b'L', b'F', 2, data];
            h.resize(16, 0);
            h.extend(e_type);
            h
        };
        assert_eq!(elf_is_pie(&header(1, [2, 0])), Some(false));
        assert_eq!(elf_is_pie(&header(1, [3, 0])), Some(true));
        assert_eq!(elf_is_pie(&header(2, [0, 3])), Some(true), "big-endian");
        assert_eq!(elf_is_pie(&header(1, [1, 0])), None, "a relocatable object");
        assert_eq!(elf_is_pie(b"#!/bin/sh"), None);
        assert_eq!(elf_is_pie(&header(1, [2, 0])[..10]), None, "truncated");
        let this = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(elf_is_pie(&this).is_some(), "the test binary is an executable");
    }

    #[test]
    fn the_startup_event_is_found_among_the_log_lines() {
        let log = concat!(
            "not json\n",
            r#"{"timestamp":"2026-11-22T02:00:00Z","level":"INFO","message":"something else"}"#,
            "\n",
            r#"{"timestamp":"2026-11-22T02:00:00Z","level":"DEBUG","steps":"logging=18,dynamodb_client=170","message":"ready for events"}"#,
            "\n"
        );
        let steps = startup_steps(log).unwrap();
        assert_eq!(
            steps,
            vec![("logging".into(), Duration::from_micros(18)), ("dynamodb_client".into(), Duration::from_micros(170))]
        );
        assert_eq!(startup_steps("{\"message\":\"request handled\"}\n"), None);
        let start = ItemizedStart { init: Duration::from_micros(1000), steps };
        assert_eq!(start.outside_setup(), Duration::from_micros(812));
    }
}
