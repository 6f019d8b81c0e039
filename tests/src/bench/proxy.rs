//! A counting proxy in front of the emulator. The functions' `AWS_ENDPOINT_URL` points at it,
//! so every AWS request they make is counted by service and operation — with the DynamoDB
//! request units it consumes — and passed on unchanged. The local stack's own requests (the
//! pumps playing SQS delivery and the scheduler, provisioning, the benchmark's reads) go to the
//! emulator directly and are not counted.

use super::cost::{self, Units};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Headers that describe one HTTP connection, not the request.
const HOP_BY_HOP: [&str; 5] = ["host", "content-length", "connection", "transfer-encoding", "expect"];

/// What the functions asked of AWS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// (service, operation) → requests.
    pub requests: BTreeMap<(String, String), f64>,
    /// Each kind of request in more detail (for DynamoDB, the items it reads or writes) → count.
    pub calls: BTreeMap<String, f64>,
    pub dynamodb: Units,
    /// Recipients of the mail sent through SES (each is one billed email).
    pub emails: f64,
}

impl Usage {
    /// What was asked between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            requests: difference(&self.requests, &earlier.requests),
            calls: difference(&self.calls, &earlier.calls),
            dynamodb: Units {
                read: self.dynamodb.read - earlier.dynamodb.read,
                write: self.dynamodb.write - earlier.dynamodb.write,
            },
            emails: self.emails - earlier.emails,
        }
    }

    /// The average of several usages.
    pub fn mean(all: &[Usage]) -> Usage {
        let n = all.len().max(1) as f64;
        let mut mean = Usage::default();
        for usage in all {
            for (key, count) in &usage.requests {
                *mean.requests.entry(key.clone()).or_default() += count / n;
            }
            for (key, count) in &usage.calls {
                *mean.calls.entry(key.clone()).or_default() += count / n;
            }
            mean.dynamodb.read += usage.dynamodb.read / n;
            mean.dynamodb.write += usage.dynamodb.write / n;
            mean.emails += usage.emails / n;
        }
        mean
    }

    /// Requests to `service` whose operation satisfies `which`.
    pub fn count(&self, service: &str, which: impl Fn(&str) -> bool) -> f64 {
        self.requests.iter().filter(|((s, op), _)| s == service && which(op)).map(|(_, n)| n).sum()
    }

    pub fn total(&self) -> f64 {
        self.requests.values().sum()
    }
}

fn difference<K: Ord + Clone>(later: &BTreeMap<K, f64>, earlier: &BTreeMap<K, f64>) -> BTreeMap<K, f64> {
    let mut diff = later.clone();
    for (key, n) in earlier {
        *diff.entry(key.clone()).or_default() -= n;
    }
    diff.retain(|_, n| *n != 0.0);
    diff
}

struct State {
    emulator: String,
    http: reqwest::Client,
    usage: Mutex<Usage>,
    /// Look updated items up to size their writes (off while timing: it adds requests).
    sizing: AtomicBool,
    in_flight: AtomicUsize,
    last_seen: Mutex<Instant>,
}

/// Served on the benchmark's own runtime, as a plain HTTP/1.1 server: the AWS SDK keeps its
/// connections open, and `tiny_http` can leave a new connection waiting behind open ones.
pub struct CountingProxy {
    pub url: String,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Listens on loopback and forwards to `emulator`.
    pub async fn start(emulator: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the counting proxy")?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State {
            emulator: emulator.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?,
            usage: Mutex::new(Usage::default()),
            sizing: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            last_seen: Mutex::new(Instant::now()),
        });
        let accept = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(&state, stream).await {
                            tracing::debug!(error = %format!("{e:#}"), "counting proxy connection");
                        }
                    });
                }
            }
        });
        Ok(Self { url, state, accept })
    }

    pub fn usage(&self) -> Usage {
        self.state.usage.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether to size updated items (one extra, uncounted read per update).
    pub fn set_sizing(&self, on: bool) {
        self.state.sizing.store(on, Ordering::Release);
    }

    /// Waits until no request has been in flight for `quiet`.
    pub async fn settle(&self, quiet: Duration) {
        loop {
            let idle = self.state.last_seen.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
            if self.state.in_flight.load(Ordering::Acquire) == 0 && idle >= quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One request as it came in.
struct Forward {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Requests of one keep-alive connection, one after the other.
async fn serve_connection(state: &State, stream: TcpStream) -> Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    while let Some(request) = read_request(&mut reader, &mut writer).await? {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        let (status, headers, body) = match send(state, &request, &request.body).await {
            Ok((status, headers, body)) => {
                count(state, &request, status, &body).await;
                (status, headers, body)
            }
            Err(e) => (502, vec![], format!("counting proxy: {e:#}").into_bytes()),
        };
        *state.last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body).await?;
        if header(&request, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
            break;
        }
    }
    Ok(())
}

/// The next request on the connection, or `None` once the client closed it.
async fn read_request(reader: &mut BufReader<OwnedReadHalf>, writer: &mut OwnedWriteHalf) -> Result<Option<Forward>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(url)) = (parts.next(), parts.next()) else { bail!("bad request line {line:?}") };
    let mut request = Forward { method: method.to_owned(), url: url.to_owned(), headers: Vec::new(), body: Vec::new() };
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').ok_or_else(|| anyhow!("bad header {trimmed:?}"))?;
        request.headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    if header(&request, "expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    if header(&request, "transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = header(&request, "content-length") {
        request.body = vec![0; length.parse()?];
        reader.read_exact(&mut request.body).await?;
    }
    Ok(Some(request))
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Unknown")
}

async fn send(state: &State, req: &Forward, body: &[u8]) -> Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut out = state.http.request(req.method.parse()?, format!("{}{}", state.emulator, req.url));
    for (name, value) in req.headers.iter().filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str())) {
        out = out.header(name, value);
    }
    let response = out.body(body.to_vec()).send().await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    Ok((status, headers, response.bytes().await?.to_vec()))
}

fn header<'a>(req: &'a Forward, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The signing service named in the request's SigV4 credential scope (`…/<region>/<service>/aws4_request`).
fn service(req: &Forward) -> String {
    header(req, "authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|credential| credential.split('/').nth(3))
        .unwrap_or("unknown")
        .to_owned()
}

/// The API operation: from `X-Amz-Target` for JSON protocols, from method and path for REST ones.
fn operation(service: &str, req: &Forward) -> String {
    if let Some(target) = header(req, "x-amz-target") {
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    let path = req.url.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (service, req.method.as_str(), segments.as_slice()) {
        ("ses", "POST", ["v2", "email", "outbound-emails"]) => "SendEmail".into(),
        ("scheduler", "POST", ["schedules", _]) => "CreateSchedule".into(),
        ("scheduler", "PUT", ["schedules", _]) => "UpdateSchedule".into(),
        ("scheduler", "DELETE", ["schedules", _]) => "DeleteSchedule".into(),
        ("scheduler", "GET", ["schedules", _]) => "GetSchedule".into(),
        ("scheduler", "GET", ["schedules"]) => "ListSchedules".into(),
        _ => format!("{} /{}", req.method, segments.iter().take(2).copied().collect::<Vec<_>>().join("/")),
    }
}

async fn count(state: &State, req: &Forward, status: u16, response: &[u8]) {
    let service = service(req);
    let op = operation(&service, req);
    let request_json: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut units = Units::default();
    let mut emails = 0.0;
    match service.as_str() {
        "dynamodb" => {
            let response_json: Value =
                if status == 200 { serde_json::from_slice(response).unwrap_or(Value::Null) } else { Value::Null };
            let mut sizes = HashMap::new();
            if state.sizing.load(Ordering::Acquire) {
                for (table, key) in cost::updated_items(&op, &request_json) {
                    let size = item_size_now(state, req, &table, &key).await.unwrap_or(0);
                    sizes.insert((table, key.to_string()), size);
                }
            }
            let mut size_after =
                |table: &str, key: &Value| sizes.get(&(table.to_owned(), key.to_string())).copied().unwrap_or(0);
            units = cost::dynamodb_units(&op, &request_json, &response_json, &mut size_after);
        }
        "ses" if op == "SendEmail" => {
            let destination = &request_json["Destination"];
            emails = ["ToAddresses", "CcAddresses", "BccAddresses"]
                .iter()
                .map(|field| destination[field].as_array().map_or(0, Vec::len))
                .sum::<usize>()
                .max(1) as f64;
        }
        _ => {}
    }
    let label = match service.as_str() {
        "dynamodb" => "DynamoDB",
        "sqs" => "SQS",
        "ses" => "SES",
        "scheduler" => "Scheduler",
        other => other,
    };
    let call = match label {
        "DynamoDB" => format!("{label} {}", dynamodb_call(&op, &request_json)),
        _ => format!("{label} {op}"),
    };
    let mut usage = state.usage.lock().unwrap_or_else(|p| p.into_inner());
    *usage.calls.entry(call).or_default() += 1.0;
    *usage.requests.entry((label.to_owned(), op)).or_default() += 1.0;
    usage.dynamodb.read += units.read;
    usage.dynamodb.write += units.write;
    usage.emails += emails;
}

/// A DynamoDB request with the kinds of items it touches, e.g. `GetItem ACTION` or
/// `TransactWriteItems [put ACTION, put audit ×2, update RATE]`.
fn dynamodb_call(op: &str, request: &Value) -> String {
    match op {
        "GetItem" | "UpdateItem" | "DeleteItem" => format!("{op} {}", item_kind(&request["Key"])),
        "PutItem" => format!("{op} {}", item_kind(&request["Item"])),
        "Query" | "Scan" => {
            let partition = request["ExpressionAttributeValues"]
                .as_object()
                .and_then(|values| values.values().find_map(|v| v["S"].as_str()))
                .map_or("", |pk| pk.split('#').next().unwrap_or(pk));
            match request["IndexName"].as_str() {
                Some(index) => format!("{op} {index} {partition}"),
                None => format!("{op} {partition}"),
            }
        }
        "TransactWriteItems" => {
            let mut parts: Vec<(String, usize)> = Vec::new();
            for item in request["TransactItems"].as_array().into_iter().flatten() {
                let Some((kind, write)) = item.as_object().and_then(|o| o.iter().next()) else { continue };
                let touched = if kind == "Put" { &write["Item"] } else { &write["Key"] };
                let part = format!("{} {}", kind.to_ascii_lowercase(), item_kind(touched));
                match parts.iter_mut().find(|(p, _)| *p == part) {
                    Some((_, n)) => *n += 1,
                    None => parts.push((part, 1)),
                }
            }
            let parts: Vec<String> =
                parts.into_iter().map(|(p, n)| if n > 1 { format!("{p} ×{n}") } else { p }).collect();
            format!("{op} [{}]", parts.join(", "))
        }
        _ => op.to_owned(),
    }
}

/// The kind of a stored item, from its key: the prefixes of its partition and sort keys
/// (`ACTION`, `USER PROFILE`, `RATE`, …), or `audit` for the audit table's events.
fn item_kind(key: &Value) -> String {
    use actiongate::adapters::aws::dynamo::keys;
    if key.get(keys::PK).is_none() && key.get(keys::AUDIT_PK).is_some() {
        return "audit".to_owned();
    }
    let prefix = |attribute: &str| {
        key[attribute]["S"].as_str().map(|v| v.split('#').next().unwrap_or(v).to_owned()).unwrap_or_default()
    };
    let (pk, sk) = (prefix(keys::PK), prefix(keys::SK));
    if sk.is_empty() || sk == pk {
        pk
    } else {
        format!("{pk} {sk}")
    }
}

/// The size of an item as it is now, read straight from the emulator (not counted).
async fn item_size_now(state: &State, req: &Forward, table: &str, key: &Value) -> Result<u64> {
    let lookup = Forward {
        method: "POST".into(),
        url: "/".into(),
        headers: req
            .headers
            .iter()
            .filter(|(name, _)| name != "x-amz-target")
            .cloned()
            .chain([("x-amz-target".to_owned(), "DynamoDB_20120810.GetItem".to_owned())])
            .collect(),
        body: Vec::new(),
    };
    let body = serde_json::to_vec(&json!({"TableName": table, "Key": key, "ConsistentRead": true}))?;
    let (_, _, found) = send(state, &lookup, &body).await?;
    let found: Value = serde_json::from_slice(&found)?;
    Ok(found.get("Item").and_then(Value::as_object).map_or(0, cost::item_size))
}
