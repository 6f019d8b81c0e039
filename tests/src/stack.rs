//! Starting and stopping the whole local stack.

use crate::emulator::{self, Emulator};
use crate::fakes::Fakes;
use crate::gateway::{self, GatewayState};
use crate::process::ManagedChild;
use crate::provision::{self, Provisioned};
use crate::pump;
use crate::template::Template;
use anyhow::{anyhow, Context, Result};
use aws_config::SdkConfig;
use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Gateway port; 0 picks a free one.
    pub gateway_port: u16,
    /// Emulator port; 0 picks a free one.
    pub emulator_port: u16,
    /// cargo lambda's invoke port; 0 picks a free one.
    pub invoke_port: u16,
    /// Rebuild and restart functions when their code changes (`make dev`).
    pub reload: bool,
    /// Send the functions' logs to our stdout instead of `.local/functions-<port>.log`.
    pub inherit_logs: bool,
    /// More environment for the functions (e.g. `POLICY_FILE` for a test policy).
    pub extra_env: Vec<(String, String)>,
    /// How often scheduled functions (the sweep) run; 0 means the default of 2 seconds.
    pub schedule_every_secs: u64,
    /// Do not run scheduled functions at all (tests of behaviour that must hold without them).
    pub no_schedules: bool,
    /// Run release builds of the functions (`make bench`) instead of debug builds.
    pub release: bool,
}

pub struct LocalStack {
    pub template: Template,
    pub provisioned: Provisioned,
    pub sdk: SdkConfig,
    pub gateway_url: String,
    pub invoke_port: u16,
    pub emulator: Emulator,
    pub fakes: Fakes,
    /// The environment every function runs with (the template's variables resolved locally).
    pub function_env: Vec<(String, String)>,
    functions: Arc<Mutex<ManagedChild>>,
    supervising: Arc<AtomicBool>,
    gateway: tokio::task::JoinHandle<()>,
    pumps: Vec<pump::Pumps>,
}

/// Everything the functions need besides what the template gives them.
fn local_environment(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), endpoint.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("RUST_LOG".into(), std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())),
    ]
}

/// Sets each of `over` in `env`, replacing a variable of the same name: every name appears
/// once in the environment file (cargo lambda would otherwise take the first).
fn overlay(env: &mut Vec<(String, String)>, over: &[(String, String)]) {
    for (k, v) in over {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
}

impl LocalStack {
    pub async fn start(options: StackOptions) -> Result<Self> {
        let root = crate::workspace_root();
        let template = Template::load(&root.join("infra/template.yaml"))?;
        let emulator_port = if options.emulator_port == 0 { crate::free_port()? } else { options.emulator_port };
        let emulator = Emulator::start(emulator_port).await.context("starting the AWS emulator")?;
        let sdk = emulator.sdk_config().await;
        let provisioned =
            provision::provision(&template, &sdk).await.context("provisioning from infra/template.yaml")?;

        // The gateway's address is needed first: approval links point at it.
        let server = tokio::net::TcpListener::bind(("127.0.0.1", options.gateway_port))
            .await
            .map_err(|e| anyhow!("binding the gateway to 127.0.0.1:{}: {e}", options.gateway_port))?;
        let gateway_url = format!("http://{}", server.local_addr().context("the gateway's address")?);
        // Stateful stand-ins for Gmail, Google Calendar and webhook receivers.
        let fakes = Fakes::start()?;
        for (id, labels) in
            [("demo-message-1", &["INBOX", "UNREAD", "IMPORTANT"][..]), ("demo-message-2", &["INBOX", "UNREAD"][..])]
        {
            fakes.seed_message(id, labels);
        }
        // What only a deployment (or the local stand-ins) can supply.
        let overrides = vec![
            ("PUBLIC_BASE_URL".to_owned(), gateway_url.clone()),
            ("GMAIL_API_BASE".to_owned(), fakes.url.clone()),
            ("CALENDAR_API_BASE".to_owned(), format!("{}/calendar/v3", fakes.url)),
            ("DRIVE_API_BASE".to_owned(), format!("{}/drive/v3", fakes.url)),
            ("DOCS_API_BASE".to_owned(), format!("{}/docs/v1", fakes.url)),
            ("TASKS_API_BASE".to_owned(), format!("{}/tasks/v1", fakes.url)),
            // Webhooks to loopback are allowed locally (deployed, only public addresses).
            ("WEBHOOK_ALLOWLIST".to_owned(), "127.0.0.1,localhost".to_owned()),
            // The gateway is the only host locally (loopback is always allowed).
            ("MCP_ALLOWED_HOSTS".to_owned(), String::new()),
            // The console's development sign-in (the template always says oidc); a test may ask
            // for oidc, against the local issuer in the fakes.
            ("CONSOLE_SIGN_IN".to_owned(), "dev".to_owned()),
            ("CONSOLE_CLIENT_ID".to_owned(), crate::oidc::CLIENT_ID.to_owned()),
            ("OIDC_AUTHORIZE_URL".to_owned(), format!("{}/oidc/authorize", fakes.url)),
            ("OIDC_TOKEN_URL".to_owned(), format!("{}/oidc/token", fakes.url)),
        ];
        let issuer = crate::oidc::Issuer::new(format!("{}/oidc", fakes.url), format!("{gateway_url}/console"));
        let oidc = issuer.verifier();
        fakes.state.lock().unwrap_or_else(|p| p.into_inner()).oidc = issuer;

        // One environment file for cargo lambda: every function's resolved template variables.
        let mut env: Vec<(String, String)> = Vec::new();
        for function in &template.functions {
            for (k, v) in provision::resolve_env(function, &provisioned, &overrides)? {
                if let Some(existing) = env.iter().find(|(name, _)| *name == k) {
                    if existing.1 != v {
                        return Err(anyhow!("{k} differs between functions; the local stack shares one environment"));
                    }
                } else {
                    env.push((k, v));
                }
            }
        }
        // The local settings, then a test's own variables, win over the template's (RUST_LOG
        // from the caller's shell; e.g. a policy cache of 0 seconds).
        overlay(&mut env, &local_environment(&emulator.endpoint));
        overlay(&mut env, &options.extra_env);
        let local_dir = root.join(".local");
        std::fs::create_dir_all(&local_dir)?;
        let env_file = local_dir.join(format!("functions-{emulator_port}.env"));
        std::fs::write(&env_file, env.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>())?;

        let invoke_port = if options.invoke_port == 0 { crate::free_port()? } else { options.invoke_port };
        let log = (!options.inherit_logs).then(|| local_dir.join(format!("functions-{invoke_port}.log")));
        let invoke_url = format!("http://127.0.0.1:{invoke_port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
        let watch = WatchCommand {
            functions: template.functions.iter().map(|f| (f.binary.clone(), !f.routes.is_empty())).collect(),
            invoke_url: invoke_url.clone(),
            http: http.clone(),
            root: root.clone(),
            invoke_port,
            env_file: env_file.clone(),
            reload: options.reload,
            release: options.release,
            log,
        };
        let functions = Arc::new(Mutex::new(watch.spawn()?));
        emulator::wait_for_http(&invoke_url, Duration::from_secs(60))
            .await
            .context("waiting for cargo lambda watch")?;

        let routes = template
            .functions
            .iter()
            .flat_map(|f| f.routes.iter().map(move |r| (r.clone(), f.binary.clone())))
            .collect();
        let state = Arc::new(GatewayState {
            routes,
            invoke_url: invoke_url.clone(),
            emulator: emulator.endpoint.clone(),
            http: http.clone(),
            ready: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            oidc: Some(oidc),
            // Started for the deployed sign-in: only the issuer's tokens, as a deployment.
            dev_tokens: !options.extra_env.iter().any(|(k, v)| k == "CONSOLE_SIGN_IN" && v == "oidc"),
        });
        let server = gateway::serve(server, Arc::clone(&state), &tokio::runtime::Handle::current());

        // Start every function once, so the first real request does not pay for compilation.
        watch.warm_all().await?;
        let supervising = Arc::new(AtomicBool::new(true));
        supervise(Arc::clone(&functions), watch, Arc::clone(&supervising));
        let every = Duration::from_secs(if options.schedule_every_secs == 0 { 2 } else { options.schedule_every_secs });
        for function in template.functions.iter().filter(|f| !f.schedule_inputs.is_empty() && !options.no_schedules) {
            pump::start_timer(
                http.clone(),
                invoke_url.clone(),
                function.binary.clone(),
                function.schedule_inputs.clone(),
                every,
            );
        }
        let mut pumps = Vec::new();
        for function in template.functions.iter().filter(|f| !f.sqs_sources.is_empty()) {
            for queue in &function.sqs_sources {
                let (url, arn) = provisioned.queues.get(queue).cloned().ok_or_else(|| anyhow!("no queue {queue}"))?;
                pumps.push(pump::start(pump::PumpConfig {
                    sdk: sdk.clone(),
                    http: http.clone(),
                    invoke_url: invoke_url.clone(),
                    executor: function.binary.clone(),
                    work_queue_url: url,
                    work_queue_arn: arn,
                    schedule_groups: provisioned.schedule_groups.values().cloned().collect(),
                    queues_by_arn: provisioned.queues.values().map(|(url, arn)| (arn.clone(), url.clone())).collect(),
                }));
            }
        }
        state.ready.store(true, Ordering::Release);
        Ok(Self {
            template,
            provisioned,
            sdk,
            gateway_url,
            invoke_port,
            emulator,
            functions,
            supervising,
            gateway: server,
            fakes,
            function_env: env,
            pumps,
        })
    }

    /// Holds (or resumes) the delivery of queued work to the executor and the firing of due
    /// schedules, as if the event source mapping and the scheduler were paused.
    pub fn hold_deliveries(&self, held: bool) {
        for pumps in &self.pumps {
            pumps.hold(held);
        }
    }

    /// Whether the functions' server is up (it is restarted if a function crashes it).
    pub fn functions_running(&self) -> bool {
        self.functions.lock().unwrap_or_else(|p| p.into_inner()).running()
    }

    pub fn stop(mut self) {
        // The pumps first: they would report every request to the stopped emulator.
        self.pumps.clear();
        self.gateway.abort();
        self.supervising.store(false, Ordering::Release);
        self.functions.lock().unwrap_or_else(|p| p.into_inner()).stop();
    }
}

/// How to start `cargo lambda watch` (again, after a function crashed and took it down).
struct WatchCommand {
    /// (binary, serves HTTP) of every function, to start them after a restart.
    functions: Vec<(String, bool)>,
    invoke_url: String,
    http: reqwest::Client,
    root: std::path::PathBuf,
    invoke_port: u16,
    env_file: std::path::PathBuf,
    reload: bool,
    release: bool,
    log: Option<std::path::PathBuf>,
}

impl WatchCommand {
    fn spawn(&self) -> Result<ManagedChild> {
        let mut cmd = Command::new(crate::venv_bin("cargo-lambda"));
        cmd.current_dir(&self.root)
            .args(["lambda", "watch", "-A", "127.0.0.1", "-P", &self.invoke_port.to_string(), "--env-file"])
            .arg(&self.env_file);
        if !self.reload {
            cmd.arg("--ignore-changes");
        }
        if self.release {
            cmd.arg("--release");
        }
        // `cargo test` gives its test binaries CARGO_PKG_NAME, CARGO_MANIFEST_DIR and the like.
        // Passed on to cargo lambda's `cargo run`, they would dirty every build script that
        // watches them (ring's does) and recompile the AWS SDK a second time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let package_scoped = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_",
                "CARGO_TARGET_TMPDIR",
            ];
            if package_scoped.iter().any(|p| name.starts_with(p)) {
                cmd.env_remove(name.as_ref());
            }
        }
        // cargo lambda runs `cargo`; make sure it finds the same toolchain we were built with.
        if let Some(cargo) = std::env::var_os("CARGO") {
            if let Some(dir) = std::path::Path::new(&cargo).parent() {
                let path = std::env::var_os("PATH").unwrap_or_default();
                let mut dirs = vec![dir.to_path_buf()];
                dirs.extend(std::env::split_paths(&path));
                cmd.env("PATH", std::env::join_paths(dirs)?);
            }
        }
        ManagedChild::spawn("cargo lambda watch", cmd, self.log.as_deref())
    }

    async fn warm_all(&self) -> Result<()> {
        for (binary, is_http) in &self.functions {
            warm(&self.http, &self.invoke_url, binary, *is_http)
                .await
                .with_context(|| format!("starting function {binary}"))?;
        }
        Ok(())
    }
}

/// Lambda replaces a crashed execution environment; cargo lambda instead stops altogether
/// when a function process dies. Restart it, so a crash fails only the invocation in flight.
fn supervise(functions: Arc<Mutex<ManagedChild>>, watch: WatchCommand, supervising: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while supervising.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Once warm, a healthy cargo lambda keeps one process per function; when one dies it
            // stops serving (and may stop the others).
            let healthy = {
                let mut child = functions.lock().unwrap_or_else(|p| p.into_inner());
                child.running() && child.children() >= watch.functions.len()
            };
            if healthy || !supervising.load(Ordering::Acquire) {
                continue;
            }
            tracing::warn!("cargo lambda watch stopped serving (a function crashed); restarting it");
            let restarted = match watch.spawn() {
                Ok(fresh) => {
                    let mut old = std::mem::replace(&mut *functions.lock().unwrap_or_else(|p| p.into_inner()), fresh);
                    old.stop();
                    match emulator::wait_for_http(&watch.invoke_url, Duration::from_secs(60)).await {
                        Ok(()) => watch.warm_all().await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = restarted {
                tracing::error!(error = %format!("{e:#}"), "restarting cargo lambda watch failed");
            }
        }
    });
}

async fn warm(http: &reqwest::Client, invoke_url: &str, binary: &str, is_http: bool) -> Result<()> {
    let event = if is_http {
        // An unauthenticated request: every API function answers it without touching AWS.
        json!({"version": "2.0", "routeKey": "GET /warm", "rawPath": "/warm", "rawQueryString": "", "headers": {},
               "requestContext": {"accountId": "123456789012", "apiId": "local", "domainName": "127.0.0.1", "domainPrefix": "local",
               "http": {"method": "GET", "path": "/warm", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "local-stack"},
               "requestId": "warm", "routeKey": "GET /warm", "stage": "$default", "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0},
               "isBase64Encoded": false})
    } else {
        json!({"Records": []})
    };
    let url = format!("{invoke_url}/2015-03-31/functions/{binary}/invocations");
    let response = http.post(&url).json(&event).send().await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() || body.contains("errorType") {
        return Err(anyhow!("warm-up invocation answered {status}: {body}"));
    }
    Ok(())
}

/// Addresses of the stack shared by every test in one test binary.
#[derive(Debug, Clone)]
pub struct SharedStack {
    pub gateway_url: String,
    pub emulator: String,
    pub invoke_port: u16,
    pub provisioned: Provisioned,
    /// Base URL of the fake Gmail, Calendar and webhook services.
    pub fakes_url: String,
}

static SHARED: OnceLock<Result<SharedStack, String>> = OnceLock::new();

/// Starts the stack once per test process, on a thread of its own that lives as long as the
/// process (its children are tied to that thread, so they stop when the tests end).
pub fn shared() -> SharedStack {
    shared_with(&[])
}

/// Like [`shared`], with more environment for the functions. The first call in a test process
/// decides it; every test of one binary must ask for the same.
pub fn shared_with(extra_env: &[(&str, &str)]) -> SharedStack {
    let extra_env: Vec<(String, String)> = extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let result = SHARED.get_or_init(move || {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                // `ACTIONGATE_SWEEP=off` in a test's environment list turns the sweep's timer off.
                let no_schedules = extra_env.iter().any(|(k, v)| k == "ACTIONGATE_SWEEP" && v == "off");
                match LocalStack::start(StackOptions { extra_env, no_schedules, ..StackOptions::default() }).await {
                    Ok(stack) => {
                        let _ = tx.send(Ok(SharedStack {
                            gateway_url: stack.gateway_url.clone(),
                            emulator: stack.emulator.endpoint.clone(),
                            invoke_port: stack.invoke_port,
                            provisioned: stack.provisioned.clone(),
                            fakes_url: stack.fakes.url.clone(),
                        }));
                        // Serve until the process exits.
                        std::future::pending::<()>().await;
                        drop(stack);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            });
        });
        rx.recv().map_err(|e| e.to_string()).and_then(|r| r)
    });
    match result {
        Ok(stack) => stack.clone(),
        Err(e) => panic!("the local stack did not start: {e}"),
    }
}

/// An emulator with the template's resources, shared by every test in one test binary (for
/// adapter tests that need no functions).
pub fn shared_emulator() -> (String, Provisioned) {
    static EMULATOR: OnceLock<Result<(String, Provisioned), String>> = OnceLock::new();
    let result = EMULATOR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                let _ = tx.send(Err("no runtime".to_owned()));
                return;
            };
            runtime.block_on(async move {
                let started = async {
                    let root = crate::workspace_root();
                    let template = Template::load(&root.join("infra/template.yaml"))?;
                    let emulator = Emulator::start(crate::free_port()?).await?;
                    let provisioned = provision::provision(&template, &emulator.sdk_config().await).await?;
                    anyhow::Ok((emulator, provisioned))
                };
                match started.await {
                    Ok((emulator, provisioned)) => {
                        let _ = tx.send(Ok((emulator.endpoint.clone(), provisioned)));
                        std::future::pending::<()>().await;
                        drop(emulator);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            });
        });
        rx.recv().map_err(|e| e.to_string()).and_then(|r| r)
    });
    match result {
        Ok(v) => v.clone(),
        Err(e) => panic!("the emulator did not start: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlaid_variable_replaces_the_templates_and_appears_once() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let mut env = vec![pair("RUST_LOG", "info"), pair("ACTIONS_TABLE", "t")];
        overlay(&mut env, &[pair("RUST_LOG", "info,actiongate=debug")]);
        overlay(&mut env, &[pair("POLICY_CACHE_SECS", "0")]);
        assert_eq!(
            env,
            vec![pair("ACTIONS_TABLE", "t"), pair("RUST_LOG", "info,actiongate=debug"), pair("POLICY_CACHE_SECS", "0")]
        );
    }
}
