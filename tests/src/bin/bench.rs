//! `make bench`: the release functions measured in one run — cold start against a hello-world
//! `lambda_runtime` binary, AWS requests and cost per lifecycle (with a Step Functions
//! comparison), throughput against the emulator's floor, peak memory and binary size. Prints
//! the tables and rewrites `BENCHMARKS.md`. `make bench` builds the release binaries first.

use actiongate::config::vars;
use actiongate_local::bench::cost::{self, PRICES};
use actiongate_local::bench::footprint::{self, BATCH};
use actiongate_local::bench::lifecycles::{Driver, Lifecycle, Measured, Throughput};
use actiongate_local::bench::proxy::CountingProxy;
use actiongate_local::bench::report::{self, mark, Table};
use actiongate_local::bench::{FUNCTIONS, HELLO, HELLO_SDK};
use actiongate_local::stack::{LocalStack, StackOptions};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::time::Duration;

const INIT_RUNS: usize = 100;
/// Starts of each binary with the functions' startup steps logged (table 1b).
const ITEMIZED_RUNS: usize = 30;
const LIFECYCLE_RUNS: usize = 3;
const THROUGHPUT_ACTIONS: usize = 100;
/// Requests in flight at once in the throughput runs.
const CONCURRENCY: usize = 8;
const INIT_TARGET: f64 = 1.5;
const REQUEST_TARGET: f64 = 6.0;
const MEMORY_TARGET_MIB: f64 = 40.0;

struct Figures {
    files: BTreeMap<String, footprint::BinaryFile>,
    init: BTreeMap<String, Vec<Duration>>,
    itemized: BTreeMap<String, Vec<footprint::ItemizedStart>>,
    memory: BTreeMap<String, u64>,
    lifecycles: Vec<Measured>,
    throughput: Throughput,
}

#[tokio::main]
async fn main() -> Result<()> {
    actiongate_local::init_logs(tracing::Level::WARN, std::io::stderr);
    let binaries = all_binaries();
    let files = footprint::binary_files(&binaries)?;

    progress("starting the local stack: release functions, their AWS requests through the counting proxy");
    let emulator_port = actiongate_local::free_port()?;
    let proxy = CountingProxy::start(&format!("http://127.0.0.1:{emulator_port}")).await?;
    let policy = actiongate_local::policy_file("bench", &[actiongate_local::ROOMY_AUTO_LIMITS])?;
    let stack = LocalStack::start(StackOptions {
        emulator_port,
        release: true,
        no_schedules: true,
        extra_env: vec![
            ("AWS_ENDPOINT_URL".into(), proxy.url.clone()),
            ("POLICY_FILE".into(), policy),
            // One policy read per function instance: a refresh in the middle of a lifecycle
            // would be counted as part of it.
            ("POLICY_CACHE_SECS".into(), "3600".into()),
        ],
        ..StackOptions::default()
    })
    .await
    .context("starting the local stack")?;
    let figures = measure(&stack, &proxy, files).await;
    let function_env = stack.function_env.clone();
    stack.stop();
    let mut figures = figures?;
    (figures.init, figures.itemized) = measure_init(&function_env, &binaries).await?;

    let tables = tables(&figures);
    println!();
    for table in &tables {
        println!("{}", table.markdown());
    }
    let path = actiongate_local::workspace_root().join("BENCHMARKS.md");
    let sdk_ratio = init_ratio(&figures.init, HELLO_SDK, HELLO);
    std::fs::write(&path, benchmarks_md(&tables, sdk_ratio)).with_context(|| format!("writing {}", path.display()))?;
    println!("Written to BENCHMARKS.md.");
    Ok(())
}

async fn measure(
    stack: &LocalStack,
    proxy: &CountingProxy,
    files: BTreeMap<String, footprint::BinaryFile>,
) -> Result<Figures> {
    progress(&format!("memory: each function handling a batch of {BATCH}"));
    let memory = footprint::peak_memory(stack).await?;
    let driver = Driver::new(stack, proxy, "lifecycles").await?;
    let mut lifecycles = Vec::new();
    for lifecycle in Lifecycle::ALL {
        progress(&format!("requests: {} ({LIFECYCLE_RUNS} runs after a warm-up)", lifecycle.name()));
        lifecycles.push(driver.measure(lifecycle, LIFECYCLE_RUNS).await?);
    }
    progress(&format!("throughput: {THROUGHPUT_ACTIONS} tier-1 actions, {CONCURRENCY} at a time"));
    let throughput = Driver::new(stack, proxy, "throughput").await?.throughput(THROUGHPUT_ACTIONS, CONCURRENCY).await?;
    Ok(Figures { files, init: BTreeMap::new(), itemized: BTreeMap::new(), memory, lifecycles, throughput })
}

/// The init times, once the local stack has stopped: a cold start is timed on an idle machine,
/// as a Lambda sandbox runs one function alone, and in the deployed configuration. The template
/// sets neither `AWS_ENDPOINT_URL` (the local emulator's address: the SDK parses it at start)
/// nor `POLICY_FILE` (the embedded policy is read at start; the lifecycles run with a policy
/// file of roomy limits).
async fn measure_init(function_env: &[(String, String)], binaries: &[&str]) -> Result<(Init, Itemized)> {
    progress(&format!("cold start: {INIT_RUNS} starts of each binary under a minimal Lambda Runtime API"));
    let local_only = ["AWS_ENDPOINT_URL", vars::POLICY_FILE];
    let deployed: Vec<(String, String)> =
        function_env.iter().filter(|(name, _)| !local_only.contains(&name.as_str())).cloned().collect();
    let init = footprint::init_times(binaries, &deployed, INIT_RUNS).await?;
    progress(&format!("cold start itemized: {ITEMIZED_RUNS} starts of each binary logging its startup steps"));
    Ok((init, footprint::itemized_starts(binaries, &deployed, ITEMIZED_RUNS).await?))
}

type Init = BTreeMap<String, Vec<Duration>>;
type Itemized = BTreeMap<String, Vec<footprint::ItemizedStart>>;

/// Every binary the benchmark starts: the two references, then the functions.
fn all_binaries() -> Vec<&'static str> {
    [HELLO, HELLO_SDK].into_iter().chain(FUNCTIONS).collect()
}

fn progress(what: &str) {
    eprintln!("bench: {what}…");
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// `label`'s median init as a multiple of `reference`'s.
fn init_ratio(init: &BTreeMap<String, Vec<Duration>>, label: &str, reference: &str) -> f64 {
    let of = |l: &str| init.get(l).map(|s| median(s)).unwrap_or_default().as_secs_f64();
    of(label) / of(reference).max(1e-9)
}

/// The middle half (25th to 75th percentile) of each start's ratio to hello's start of the
/// same round: how far apart the two can be told on this machine.
fn paired_ratio_spread(samples: &[Duration], hello: &[Duration]) -> String {
    let mut ratios: Vec<f64> = samples
        .iter()
        .zip(hello)
        .filter(|(_, h)| !h.is_zero())
        .map(|(s, h)| s.as_secs_f64() / h.as_secs_f64())
        .collect();
    if ratios.is_empty() {
        return String::new();
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    format!("{:.2}–{:.2}", at(0.25), at(0.75))
}

/// Every step the functions timed, in the order they log them: a step only some functions have
/// (the executor's `handlers`) goes after the step it follows there.
fn startup_steps(itemized: &BTreeMap<String, Vec<footprint::ItemizedStart>>, binaries: &[&str]) -> Vec<String> {
    let mut steps: Vec<String> = Vec::new();
    for start in binaries.iter().filter_map(|b| itemized.get(*b)).flatten() {
        let mut next = 0;
        for (name, _) in &start.steps {
            next = match steps.iter().position(|s| s == name) {
                Some(at) => at + 1,
                None => {
                    steps.insert(next, name.clone());
                    next + 1
                }
            };
        }
    }
    steps
}

fn micros(d: Duration) -> String {
    format!("{}", d.as_micros())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: f64) -> f64 {
    bytes / 1024.0 / 1024.0
}

/// A count, whole when every run agreed (`+ 0.0` turns the -0 of an empty sum into 0).
fn n(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() + 0.0)
    } else {
        format!("{x:.1}")
    }
}

fn dollars(x: f64) -> String {
    format!("${:.2}", x + 0.0)
}

fn tables(f: &Figures) -> Vec<Table> {
    let binaries = all_binaries();
    let mut init = Table::new(
        &format!("1. Init time under the Lambda Runtime API (median of {INIT_RUNS} cold starts, release x86_64)"),
        &[
            "binary",
            "median ms",
            "min ms",
            "max ms",
            "× hello",
            "per round p25–p75",
            "× hello-sdk",
            &format!("target ≤ {INIT_TARGET}×"),
        ],
    );
    let hello_samples = f.init.get(HELLO).cloned().unwrap_or_default();
    for label in binaries.iter().copied() {
        let samples = f.init.get(label).cloned().unwrap_or_default();
        let ratio = init_ratio(&f.init, label, HELLO);
        init.row(vec![
            label.to_owned(),
            ms(median(&samples)),
            ms(samples.iter().min().copied().unwrap_or_default()),
            ms(samples.iter().max().copied().unwrap_or_default()),
            format!("{ratio:.2}"),
            match label {
                HELLO => String::new(),
                _ => paired_ratio_spread(&samples, &hello_samples),
            },
            match label {
                HELLO => String::new(),
                _ => format!("{:.2}", init_ratio(&f.init, label, HELLO_SDK)),
            },
            match label {
                HELLO => "baseline".to_owned(),
                HELLO_SDK => "reference".to_owned(),
                _ => mark(ratio, INIT_TARGET),
            },
        ]);
    }

    let steps = startup_steps(&f.itemized, &binaries);
    let step_headers: Vec<String> = steps.iter().map(|step| format!("{step} µs")).collect();
    let headers: Vec<&str> =
        ["binary", "init µs", "outside setup µs"].into_iter().chain(step_headers.iter().map(String::as_str)).collect();
    let mut itemized = Table::new(
        &format!("1b. Where init goes (median µs of {ITEMIZED_RUNS} more starts; each function times the steps of its setup in main)"),
        &headers,
    );
    for label in binaries.iter().copied() {
        let starts = f.itemized.get(label).map(Vec::as_slice).unwrap_or_default();
        let column = |pick: &dyn Fn(&footprint::ItemizedStart) -> Option<Duration>| {
            let samples: Vec<Duration> = starts.iter().filter_map(pick).collect();
            if samples.is_empty() {
                String::new()
            } else {
                micros(median(&samples))
            }
        };
        let mut row = vec![label.to_owned(), column(&|s| Some(s.init)), column(&|s| Some(s.outside_setup()))];
        for step in &steps {
            row.push(column(&|s| s.steps.iter().find(|(name, _)| name == step).map(|(_, took)| *took)));
        }
        itemized.row(row);
    }

    let mut requests = Table::new(
        &format!("2a. AWS requests per lifecycle, made by the functions (counted; mean of {LIFECYCLE_RUNS} runs)"),
        &["lifecycle", "DynamoDB reads", "DynamoDB writes", "RRU", "WRU", "SQS", "SES", "Scheduler", "total", "target"],
    );
    let mut billable = Table::new(
        "2b. Every billable request per lifecycle",
        &[
            "lifecycle",
            "functions' AWS requests",
            "API Gateway",
            "Lambda invocations",
            "SQS by event source (est.)",
            "total",
        ],
    );
    let mut costs = Table::new(
        "2c. Cost per million lifecycles (us-east-1 on-demand; Lambda duration excluded) vs Step Functions Standard",
        &[
            "lifecycle",
            "DynamoDB",
            "SQS",
            "SES",
            "Scheduler",
            "Lambda",
            "API Gateway",
            "total",
            "SFN transitions",
            "SFN transitions only",
            "SFN ÷ ours",
        ],
    );
    for m in &f.lifecycles {
        let name = m.lifecycle.name().to_owned();
        let (fewest, most) = m.range();
        let total =
            if fewest == most { n(most) } else { format!("{} ({}–{})", n(m.usage.total()), n(fewest), n(most)) };
        let target = if m.lifecycle == Lifecycle::AutoAction {
            format!("≤ {REQUEST_TARGET}: {}", mark(m.usage.total(), REQUEST_TARGET))
        } else {
            String::new()
        };
        requests.row(vec![
            name.clone(),
            n(m.dynamodb_reads()),
            n(m.dynamodb_writes()),
            n(m.usage.dynamodb.read),
            n(m.usage.dynamodb.write),
            n(m.sqs()),
            n(m.ses()),
            n(m.scheduler()),
            total,
            target,
        ]);
        billable.row(vec![
            name.clone(),
            n(m.usage.total()),
            n(m.lifecycle.api_calls()),
            n(m.lambda_invocations()),
            n(m.event_source_requests()),
            n(m.billable_requests()),
        ]);
        let c = m.cost_per_million();
        let sfn = m.step_functions_cost_per_million();
        costs.row(vec![
            name,
            dollars(c.dynamodb),
            dollars(c.sqs),
            dollars(c.ses),
            dollars(c.scheduler),
            dollars(c.lambda),
            dollars(c.api_gateway),
            dollars(c.total()),
            m.lifecycle.step_functions_states().len().to_string(),
            dollars(sfn),
            format!("{:.1}×", sfn / c.total().max(1e-9)),
        ]);
    }
    let mut operations = Table::new("2d. The requests counted", &["lifecycle", "request (items touched)", "per run"])
        .with_text_columns(2);
    for m in &f.lifecycles {
        for (i, (call, count)) in m.usage.calls.iter().enumerate() {
            let lifecycle = if i == 0 { m.lifecycle.name() } else { "" };
            operations.row(vec![lifecycle.to_owned(), call.clone(), n(*count)]);
        }
    }

    let t = &f.throughput;
    let mut throughput = Table::new(
        &format!(
            "3. Throughput on the local stack ({} tier-1 actions, {} at a time; one release instance per function, moto)",
            t.actions, t.concurrency
        ),
        &["path", "actions/s", "floor: put+send+update /s", "floor ÷ ours", "floor, writes as transactions /s", "÷ ours"],
    );
    for (path, rate) in [("intake (POST /actions → queued)", t.intake), ("executor (queued → completed)", t.executor)]
    {
        throughput.row(vec![
            path.to_owned(),
            format!("{rate:.1}"),
            format!("{:.1}", t.floor),
            format!("{:.2}×", t.floor / rate.max(1e-9)),
            format!("{:.1}", t.floor_transactional),
            format!("{:.2}×", t.floor_transactional / rate.max(1e-9)),
        ]);
    }

    let mut memory = Table::new(
        &format!("4. Peak memory (VmHWM) while handling a batch of {BATCH}"),
        &["function", "peak RSS MiB", &format!("target ≤ {MEMORY_TARGET_MIB} MiB")],
    );
    for b in FUNCTIONS {
        let peak = mib(f.memory.get(b).copied().unwrap_or_default() as f64 * 1024.0);
        memory.row(vec![b.to_owned(), format!("{peak:.1}"), mark(peak, MEMORY_TARGET_MIB)]);
    }

    let hello_size = f.files.get(HELLO).map_or(1, |h| h.bytes) as f64;
    let mut sizes = Table::new("5. Binary size (release, stripped, x86_64)", &["binary", "link", "MiB", "× hello"])
        .with_text_columns(2);
    for b in &binaries {
        let file = f.files.get(*b);
        let size = file.map_or(0, |h| h.bytes) as f64;
        let link = match file.map(|h| h.pie) {
            Some(true) => "PIE",
            Some(false) => "fixed address (non-PIE)",
            None => "",
        };
        sizes.row(vec![
            (*b).to_owned(),
            link.to_owned(),
            format!("{:.2}", mib(size)),
            format!("{:.1}", size / hello_size),
        ]);
    }

    let mut prices = Table::new("Prices used (AWS public on-demand, us-east-1)", &["service", "unit", "$ per million"])
        .with_text_columns(2);
    for p in PRICES {
        prices.row(vec![p.service.to_owned(), p.unit.to_owned(), format!("{:.3}", p.per_million)]);
    }
    let mut machine = Table::new("Machine", &["", ""]).with_text_columns(2);
    machine.row(vec!["date".into(), chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()]);
    for (k, v) in report::machine() {
        machine.row(vec![k.to_owned(), v]);
    }
    vec![machine, init, itemized, requests, billable, costs, operations, throughput, memory, sizes, prices]
}

/// `BENCHMARKS.md`: the tables of this run between the explanations that do not change.
fn benchmarks_md(tables: &[Table], sdk_ratio: f64) -> String {
    let table = |title_start: &str| {
        tables.iter().find(|t| t.title.starts_with(title_start)).map(Table::markdown).unwrap_or_default()
    };
    let sfn: Vec<String> =
        Lifecycle::ALL.iter().map(|l| format!("- {}: {}", l.name(), l.step_functions_states().join(" → "))).collect();
    let lifecycles: Vec<String> =
        Lifecycle::ALL.iter().map(|l| format!("- {}: {}", l.name(), l.description())).collect();
    let duration_note = cost::LAMBDA_ARM64_GB_SECOND * (256.0 / 1024.0) * 0.1 * 1e6;
    format!(
        "# Benchmarks

Written by `make bench` (`tests/src/bin/bench.rs`); every figure below comes from one run on the
machine described. Run it again to refresh the file. Targets are marked PASS or OVER.

{machine}
## 1. Cold start

Each release binary is started {INIT_RUNS} times (after one unmeasured start that puts it in the
page cache), in turns, under a minimal Lambda Runtime API served by the benchmark, once the
local stack has stopped (a Lambda sandbox runs one function alone): a clean environment with the
runtime's variables and the function's configuration from the template (as deployed: the
embedded policy, and no `AWS_ENDPOINT_URL`), timed from the exec of the binary (read by `exec-timed`, a small program that
reads the clock and execs it) to its first `GET /2018-06-01/runtime/invocation/next`. `hello` is a hello-world `lambda_runtime` echo
function (`bench/hello`) built with the same release profile and link, on the same single-threaded
Tokio runtime. `hello-sdk` (`bench/hello-sdk`, built the same way) is hello plus the setup every
function starts with, done by the functions' own code and nothing else: JSON logging, the AWS SDK's
configuration loader and a DynamoDB client. It is a reference, not a function: what it takes over
hello is the part of a function's init that is the AWS SDK's, and *× hello-sdk* is what each
function adds to that.

{init}
{sdk_budget}

What a function does at start beyond hello-world (`shared/src/config.rs`, `functions/*/src/main.rs`):
it reads its configuration and the embedded policy (all but approval, which does not apply it;
the policy is embedded as JSON, converted from TOML at build time), loads the AWS SDK's
configuration from the environment and creates the DynamoDB client every invocation uses. The
other service clients (SQS, SES, Scheduler) are created on first use (`shared/src/lazy.rs`). The
SDK's HTTPS client trusts compiled-in Amazon roots and builds its TLS connector for the first
request: the SDK's default reads and parses every certificate of the system's store at start
and builds a throwaway connector per service client, which made an init of 6.8–8.0 ms (5.5–6.5×
hello) on this machine before. What that work still costs is itemized below.

Three choices keep the rest down, and `hello` makes the same three. The
binaries are linked at a fixed address (non-PIE, `functions/link.rs`): position-independent,
intake's ~26,000 relocations had the dynamic loader copy and write about 100 pages at every
start, and its init was 0.4–0.5 ms longer (2.1 ms against 1.6 ms for the same code). Trace-level
log events are compiled out of release builds (hyper, h2, rustls and the SDK log every frame at
that level): 1.2 MB less code and 5,500 fewer relocations. And each function runs a
single-threaded Tokio runtime, as Lambda gives an instance one event at a time.

*Per round p25–p75* is the middle half of each start's ratio to hello's start of the same round:
between runs on this shared 2-core machine hello's median moves between 0.9 and 1.3 ms and the
ratios by about ±0.1, so a median within that of the target is not told apart from it. Builds
move it too: where the linker happens to put the code a start runs decides how many pages of it
fault in. Two builds of intake one dependency feature apart (the second without aws-config's SSO
providers, which its start does not run) started in 1.31 and 1.41 ms, interleaved in one run,
with 58 and 71 page faults in the binary's code; every step of its setup was slower in the second.

Table 1b itemizes what is left over hello, from {ITEMIZED_RUNS} more starts of each binary in which
the function logs how long each step of its setup in `main` took (`Startup` in
`shared/src/telemetry.rs`; the event is on with `RUST_LOG=…,actiongate::startup=debug`, off
in the starts of table 1). *Outside setup* is the rest of the init: the exec, the dynamic loader,
the Rust and Tokio start, the runtime client's first poll (hello's whole init is this), the
logging of the event, and the code of an 11–12 MB binary being faulted in as it first runs. The steps:
`logging` sets up JSON logs; `configuration` reads the environment; `sdk_config` is the AWS SDK's
configuration loader; `dynamodb_client` creates the DynamoDB client, most of which is the SDK
parsing its table of endpoint partitions and compiling their regular expressions, once per
process when its first client is created (a second client, timed once outside the benchmark,
costs about a sixth as much); `policy` reads the embedded policy; `handlers` builds the
executor's and rollback's HTTP clients (webhooks, Google APIs); `wiring` is the rest. Creating
the DynamoDB client on the first event instead would lower the init without shortening a cold
start, whose first event needs it. `hello-sdk`'s row is the same three first steps with nothing
after them: what is left is mostly the SDK's.

{itemized}
## 2. AWS requests and cost per lifecycle

The functions run under `cargo lambda watch --release` on the local stack; their
`AWS_ENDPOINT_URL` is a counting proxy in front of moto, which classifies every request by its
SigV4 service and `X-Amz-Target` or REST path. The stack's own requests (pumps, provisioning,
the benchmark's reads of the table) bypass it. Each lifecycle runs once unmeasured, then
{LIFECYCLE_RUNS} times measured, alone, until the functions are quiet:

{lifecycles}

DynamoDB request units are computed from the items: a write is 1 unit per started KB of the
item written (for an update, the item as it is afterwards), a read 1 unit per started 4 KB
(half for an eventually consistent read), a transactional item twice that, condition checks
included. SES bills each recipient as one email; EventBridge Scheduler bills each schedule's
invocation, not its creation.

The target (a tier-1 action in ≤ {REQUEST_TARGET} billable requests) is applied to the requests the
functions make to AWS services (2a). 2b adds what AWS bills around them: the API Gateway
request, the Lambda invocations (the API calls plus one executor invocation per queued or
scheduled message, which at this rate the event source mapping delivers alone) and the event
source mapping's own SQS requests, estimated as one receive and one delete per delivery (its
empty polls are a fixed cost per queue, not per action). Lambda duration is left out of the
cost: at 256 MB on arm64 each 100 ms of billed duration adds ${duration_note:.2} per million
invocations. The policy is read once per function instance (`POLICY_CACHE_SECS` is raised for
the run so that a refresh does not land inside a lifecycle); deployed, each instance reads it
at most every 30 s, a cost per instance, not per action.

{requests}
A total with a range means the runs differed. 2d lists every request by the items it touches
(the kinds of DynamoDB items by their key prefixes), per run.

{billable}
{costs}
The Step Functions figure is the state transitions alone of a Standard workflow doing the same
flow with the fewest states (no retries, no error branches) — its Lambda, DynamoDB and SES
calls would cost about what ours do on top of that:

{sfn}

{operations}
## 3. Throughput

{THROUGHPUT_ACTIONS} tier-1 `gmail.flag` actions are posted through the local gateway {CONCURRENCY} at a time
with deliveries held (intake: first request to last answer), then released to the executor
(from the release to the last action's completion, including the local pump's SQS receive and
delete; the benchmark watches for the end by reading the owner's outcome counters, one `GetItem`
every 100 ms, as anything heavier would take the emulator's time from the executor). The floor is the emulator's: the same number of raw `PutItem` + `SendMessage` +
`UpdateItem` calls made with the SDK at the same concurrency, through the same proxy (with
item sizing off, as during the timed runs). cargo lambda runs one instance of each function
(its default), so these are figures per instance; Lambda would add instances.

These are figures of the local stack, not of AWS. moto serializes DynamoDB requests (see
`scripts/emulator.py`), and before applying a `TransactWriteItems` it deep-copies the table of
every item in it, so its transactions slow down as the table grows, while its plain puts and
updates do not. Every write the functions make is a `TransactWriteItems` (2d): the second
floor, the same calls with each write a one-item transaction, shows how much of the gap is the
emulator's.

{throughput}
## 4. Memory

Each function's release binary runs alone under the benchmark's Runtime API against the same
emulator and handles {BATCH} events: intake creates {BATCH} webhook actions needing approval,
approval approves them, the executor runs them as one {BATCH}-record SQS event (concurrently, as
deployed), rollback undoes them (direct invocations, `partial: true`), and the sweep runs {BATCH}
times. The figure is the process's peak resident set (`VmHWM`), init included.

{memory}
## 5. Binary size

{sizes}
Deployed binaries are built for arm64 (`cargo lambda build --release --arm64`) with the same
profile; these are the x86_64 builds of the machine above.

{prices}",
        machine = table("Machine"),
        init = table("1."),
        itemized = table("1b."),
        requests = table("2a."),
        billable = table("2b."),
        costs = table("2c."),
        operations = table("2d."),
        throughput = table("3."),
        memory = table("4."),
        sizes = table("5."),
        prices = table("Prices"),
        lifecycles = lifecycles.join("\n"),
        sfn = sfn.join("\n"),
        sdk_budget = sdk_budget(sdk_ratio),
    )
}

/// How much of the init target `hello-sdk`'s start (`sdk_ratio` × hello's) uses up.
fn sdk_budget(sdk_ratio: f64) -> String {
    let left = match INIT_TARGET - sdk_ratio {
        left if left >= 0.005 => format!("which leaves {left:.2}× for everything a function does of its own"),
        _ => "which is all of it or more before a function does anything of its own".to_owned(),
    };
    format!(
        "In this run `hello-sdk` took {sdk_ratio:.2}× hello: of the {:.2}× over hello that the target
allows, the AWS SDK's configuration loader and first client (with the logging every function
sets up) take {:.2}×, {left}.",
        INIT_TARGET - 1.0,
        sdk_ratio - 1.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use footprint::ItemizedStart;

    fn start(steps: &[&str]) -> ItemizedStart {
        ItemizedStart {
            init: Duration::from_millis(1),
            steps: steps.iter().map(|s| ((*s).to_owned(), Duration::from_micros(10))).collect(),
        }
    }

    #[test]
    fn the_sdk_budget_says_what_is_left_or_that_nothing_is() {
        let within = sdk_budget(1.38);
        assert!(within.contains("took 1.38× hello"), "{within}");
        assert!(within.contains("take 0.38×, which leaves 0.12× for everything"), "{within}");
        let over = sdk_budget(1.55);
        assert!(over.contains("take 0.55×, which is all of it or more"), "{over}");
        assert!(sdk_budget(1.5).contains("all of it or more"));
    }

    #[test]
    fn a_step_some_functions_have_goes_after_the_one_it_follows() {
        let itemized = BTreeMap::from([
            ("hello".to_owned(), vec![start(&[])]),
            ("intake".to_owned(), vec![start(&["logging", "sdk_config", "policy", "wiring"])]),
            ("executor".to_owned(), vec![start(&["logging", "sdk_config", "policy", "handlers", "wiring"])]),
        ]);
        assert_eq!(
            startup_steps(&itemized, &["hello", "intake", "executor"]),
            ["logging", "sdk_config", "policy", "handlers", "wiring"]
        );
    }

    #[test]
    fn the_spread_is_of_the_ratios_of_each_round() {
        let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect::<Vec<_>>();
        // Hello slowed down in the last two rounds; the paired ratios stay at 1.5.
        let hello = ms(&[10, 10, 20, 20]);
        let function = ms(&[15, 15, 30, 30]);
        assert_eq!(paired_ratio_spread(&function, &hello), "1.50–1.50");
        assert_eq!(paired_ratio_spread(&ms(&[10, 20, 30, 40, 50]), &ms(&[10, 10, 10, 10, 10])), "2.00–4.00");
        assert_eq!(paired_ratio_spread(&[], &hello), "");
    }
}
