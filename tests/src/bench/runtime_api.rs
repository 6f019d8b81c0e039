//! A minimal Lambda Runtime API on loopback — the HTTP interface a function's runtime polls for
//! events — so that a release binary runs as Lambda runs it: started in a clean environment,
//! timed until its first poll for an event (its init), fed events one at a time, and its peak
//! memory read.

use super::exec_clock;
use crate::process::ManagedChild;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

const PREFIX: &str = "/2018-06-01/runtime";
/// One thread may wait in `invocation/next` while another takes the response.
const WORKERS: usize = 3;
/// The memory size the template gives every function.
const MEMORY_MB: &str = "256";
/// How long an invocation may run (the executor's timeout in the template).
const TIMEOUT: Duration = Duration::from_secs(30);

struct Invocation {
    id: String,
    event: Vec<u8>,
}

type Outcome = std::result::Result<Value, String>;

struct Shared {
    /// When the runtime first asked for an event ([`exec_clock::now`]), or why its init failed.
    init: watch::Sender<Option<std::result::Result<Duration, String>>>,
    events: Mutex<mpsc::Receiver<Invocation>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    closed: AtomicBool,
    function_arn: String,
}

/// The Runtime API one function process talks to.
struct RuntimeApi {
    address: String,
    server: Arc<tiny_http::Server>,
    shared: Arc<Shared>,
    events: mpsc::Sender<Invocation>,
    next_id: AtomicU64,
}

impl RuntimeApi {
    fn start(function: &str) -> Result<Self> {
        let server =
            Arc::new(tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow!("binding the runtime API: {e}"))?);
        let address = server.server_addr().to_ip().ok_or_else(|| anyhow!("the runtime API has no IP address"))?;
        let (events, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            init: watch::Sender::new(None),
            events: Mutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
        });
        for _ in 0..WORKERS {
            let (server, shared) = (Arc::clone(&server), Arc::clone(&shared));
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    serve(&shared, request);
                }
            });
        }
        Ok(Self { address: address.to_string(), server, shared, events, next_id: AtomicU64::new(0) })
    }

    async fn first_poll(&self, timeout: Duration) -> Result<Duration> {
        let mut init = self.shared.init.subscribe();
        let polled = tokio::time::timeout(timeout, init.wait_for(Option::is_some))
            .await
            .map_err(|_| anyhow!("the function did not ask for an event within {timeout:?}"))?
            .map_err(|_| anyhow!("the runtime API stopped"))?
            .clone();
        match polled {
            Some(Ok(at)) => Ok(at),
            Some(Err(error)) => bail!("the function's init failed: {error}"),
            None => bail!("the runtime API stopped"),
        }
    }

    async fn invoke(&self, event: &Value) -> Result<Value> {
        let id = format!("bench-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), tx);
        self.events
            .send(Invocation { id: id.clone(), event: serde_json::to_vec(event)? })
            .map_err(|_| anyhow!("the runtime API stopped"))?;
        match tokio::time::timeout(TIMEOUT, rx).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(error))) => bail!("invocation {id} failed: {error}"),
            Ok(Err(_)) => bail!("invocation {id} was dropped"),
            Err(_) => bail!("invocation {id} got no response within {TIMEOUT:?}"),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        for _ in 0..WORKERS {
            self.server.unblock();
        }
    }
}

fn serve(shared: &Shared, mut request: tiny_http::Request) {
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let path = request.url().strip_prefix(PREFIX).unwrap_or_default().to_owned();
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let text = || String::from_utf8_lossy(&body).into_owned();
    let status = match (request.method(), parts.as_slice()) {
        (tiny_http::Method::Get, ["invocation", "next"]) => {
            shared.init.send_if_modified(|init| {
                let first = init.is_none();
                if first {
                    *init = Some(Ok(exec_clock::now()));
                }
                first
            });
            match next_event(shared) {
                Some(invocation) => {
                    let _ = request.respond(event_response(invocation, shared));
                    return;
                }
                None => 410,
            }
        }
        (tiny_http::Method::Post, ["invocation", id, "response"]) => {
            complete(shared, id, Ok(serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(text()))));
            202
        }
        (tiny_http::Method::Post, ["invocation", id, "error"]) => {
            complete(shared, id, Err(text()));
            202
        }
        (tiny_http::Method::Post, ["init", "error"]) => {
            shared.init.send_replace(Some(Err(text())));
            202
        }
        _ => 404,
    };
    let _ = request.respond(tiny_http::Response::empty(status));
}

/// Waits for the next event, or `None` once the API is closed.
fn next_event(shared: &Shared) -> Option<Invocation> {
    let events = shared.events.lock().unwrap_or_else(|p| p.into_inner());
    while !shared.closed.load(Ordering::Acquire) {
        match events.recv_timeout(Duration::from_millis(50)) {
            Ok(invocation) => return Some(invocation),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
    None
}

fn event_response(invocation: Invocation, shared: &Shared) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let deadline = chrono::Utc::now() + TIMEOUT;
    let mut response = tiny_http::Response::from_data(invocation.event);
    for (name, value) in [
        ("Lambda-Runtime-Aws-Request-Id", invocation.id),
        ("Lambda-Runtime-Deadline-Ms", deadline.timestamp_millis().to_string()),
        ("Lambda-Runtime-Invoked-Function-Arn", shared.function_arn.clone()),
        ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned()),
        ("Content-Type", "application/json".to_owned()),
    ] {
        if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    response
}

fn complete(shared: &Shared, id: &str, outcome: Outcome) {
    if let Some(waiter) = shared.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
        let _ = waiter.send(outcome);
    }
}

/// A release binary running as a Lambda function against its own [`RuntimeApi`].
pub struct LambdaProcess {
    pub name: String,
    api: RuntimeApi,
    child: ManagedChild,
    /// When the binary was exec'd ([`exec_clock::now`]).
    started: Duration,
}

impl LambdaProcess {
    /// Starts `binary` as the function `name`, as Lambda does: a clean environment holding
    /// `env` and the runtime's own variables. Its output goes to `log`.
    pub fn start(binary: &Path, name: &str, env: &[(String, String)], log: &Path) -> Result<Self> {
        if !binary.exists() {
            bail!("{} is missing: build the release binaries first (make bench does)", binary.display());
        }
        let api = RuntimeApi::start(name)?;
        // Started through `exec-timed`, which reads the time just before it execs the binary and
        // sends it up a pipe (see src/bin/exec-timed.rs for why the benchmark cannot time it).
        let (clock, clock_in_child) = pipe()?;
        let fd = clock_in_child.as_raw_fd();
        let mut command = Command::new(exec_timed()?);
        command.arg(fd.to_string()).arg(binary);
        // SAFETY: fcntl is async-signal-safe. The write end stays open across this exec only.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        command.env_clear().envs(env.iter().map(|(k, v)| (k, v))).envs([
            ("AWS_LAMBDA_RUNTIME_API", api.address.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", name),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", MEMORY_MB),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", &format!("/aws/lambda/{name}")),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ]);
        let child = ManagedChild::spawn(name, command, Some(log)).with_context(|| format!("starting {name}"))?;
        drop(clock_in_child);
        let mut bytes = [0u8; exec_clock::ENCODED];
        std::fs::File::from(clock).read_exact(&mut bytes).with_context(|| format!("reading {name}'s start time"))?;
        Ok(Self { name: name.to_owned(), api, child, started: exec_clock::decode(bytes) })
    }

    /// From the process's exec to its first poll for an event: its init.
    pub async fn init_time(&self) -> Result<Duration> {
        let polled = self.api.first_poll(Duration::from_secs(20)).await?;
        polled.checked_sub(self.started).ok_or_else(|| anyhow!("{} polled before it was started", self.name))
    }

    /// Delivers `event` and returns the function's response.
    pub async fn invoke(&self, event: &Value) -> Result<Value> {
        self.api.first_poll(Duration::from_secs(20)).await?;
        self.api.invoke(event).await
    }

    /// The process's peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmHWM in /proc/{}/status", self.child.id()))
    }

    pub fn stop(mut self) {
        self.child.stop();
    }
}

/// The `exec-timed` binary built beside the benchmark.
fn exec_timed() -> Result<std::path::PathBuf> {
    let path = std::env::current_exe()?.with_file_name("exec-timed");
    if !path.exists() {
        bail!("{} is missing: make bench builds it", path.display());
    }
    Ok(path)
}

/// A pipe (read end, write end), both closed on exec.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
