//! Stateful fake external services on loopback: Gmail (`users.messages` get and modify),
//! Google Calendar (events insert, get, delete) and webhook receivers. They keep state, so a
//! test can see exactly what an action changed and what a rollback restored; `/_fake/state`
//! shows it all.
//!
//! Webhook paths choose behaviour: `/hook/ok…` answers 200, `/hook/flaky-N…` answers 503 to
//! the first N deliveries of each idempotency key, `/hook/bad…` answers 400, `/hook/redirect`
//! redirects to `?to=`. Webhooks honour `Idempotency-Key`: a repeated key replays the first
//! answer and records no second effect.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

#[derive(Default, Debug)]
pub struct FakeState {
    /// The local OpenID Connect issuer (`/oidc/…`), for the console's deployed sign-in.
    pub oidc: crate::oidc::Issuer,
    /// message id → label ids.
    pub gmail: BTreeMap<String, Vec<String>>,
    /// (calendar id, event id) → event.
    pub events: BTreeMap<(String, String), Value>,
    /// Every webhook delivery that had an effect (first per idempotency key).
    pub effects: Vec<Value>,
    /// Every webhook request received, effect or not.
    pub deliveries: Vec<Value>,
    /// idempotency key → (status, body) first answered with a 2xx.
    answered: BTreeMap<String, (u16, Value)>,
    /// idempotency key → failures still to give (flaky hooks).
    failures_left: BTreeMap<String, u32>,
    pub bearer_tokens: Vec<String>,
    /// The reference connector: its signing key, the links it added (page → URLs), every call.
    pub connector_secret: Option<String>,
    pub links: BTreeMap<String, Vec<String>>,
    pub connector_calls: Vec<Value>,
    /// page → meta description, and collection → pages, for the other tier-1 types.
    pub meta: BTreeMap<String, String>,
    pub collections: BTreeMap<String, Vec<String>>,
    /// page → stored internal-link suggestions, and page → sections added by `EXPAND_CONTENT`.
    pub suggestions: BTreeMap<String, Vec<String>>,
    pub sections: BTreeMap<String, Vec<Value>>,
    /// The `switch` connector answers 503 while this is set (an outage a test starts and ends).
    pub switch_down: bool,
    /// Gmail sending, Drive, Docs and Tasks.
    pub google: crate::fake_google::GoogleState,
}

/// An answer that trickles out one byte every 50 ms (30 s for all of it).
struct Drip {
    left: usize,
}

impl Read for Drip {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        self.left -= 1;
        buf[0] = b' ';
        Ok(1)
    }
}

/// The reference site's pages: every absolute path exists but those under `/missing`.
fn page_exists(page: &str) -> bool {
    page.starts_with('/') && !page.starts_with("/missing")
}

/// `validate`: the page exists, a link is https and not on the page yet, a page is not in the
/// collection yet. `{ok: true}`, or a 4xx with `{error, message}`.
fn site_validate(st: &FakeState, call: &Value) -> Reply {
    let p = &call["payload"];
    let page = p["page"].as_str().unwrap_or_default();
    let refuse =
        |status: u16, error: &str, message: String| (status, vec![], json!({"error": error, "message": message}));
    if call["action_type"] != "CREATE_COLLECTION_PAGE" && !page_exists(page) {
        return refuse(422, "page_missing", format!("there is no page {page:?}"));
    }
    match call["action_type"].as_str() {
        Some("ADD_AFFILIATE_LINK") => {
            let url = p["url"].as_str().unwrap_or_default();
            if !url.starts_with("https://") {
                return refuse(422, "bad_url", "links are https".into());
            }
            if st.links.get(page).is_some_and(|l| l.iter().any(|x| x == url)) {
                return refuse(409, "already_linked", format!("{page} already links {url}"));
            }
        }
        Some("ADD_TO_COLLECTION") => {
            let c = p["collection"].as_str().unwrap_or_default();
            if st.collections.get(c).is_some_and(|pages| pages.iter().any(|x| x == page)) {
                return refuse(409, "already_in_collection", format!("{page} is in {c}"));
            }
        }
        _ => {}
    }
    ok(json!({"ok": true}))
}

/// `preview`: what the call would do to the site as it is now, in a sentence.
fn site_preview(st: &FakeState, call: &Value) -> Reply {
    let p = &call["payload"];
    let page = p["page"].as_str().unwrap_or_default();
    let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
    let sentence = match call["action_type"].as_str().unwrap_or_default() {
        "ADD_AFFILIATE_LINK" => format!(
            "Add the link {} to {page} (it has {} affiliate links now)",
            s("url"),
            st.links.get(page).map_or(0, Vec::len)
        ),
        "UPDATE_META_DESCRIPTION" => format!(
            "Change the meta description of {page} from \u{201c}{}\u{201d} to \u{201c}{}\u{201d}",
            st.meta.get(page).map_or("(none)", String::as_str),
            s("description")
        ),
        "ADD_TO_COLLECTION" => format!(
            "Add {page} to the collection {} ({} pages now)",
            s("collection"),
            st.collections.get(&s("collection")).map_or(0, Vec::len)
        ),
        "GENERATE_INTERNAL_LINK_SUGGESTIONS" => format!("Suggest internal links for {page}"),
        "EXPAND_CONTENT" => format!(
            "Add {} characters to the section \u{201c}{}\u{201d} of {page}",
            s("text").chars().count(),
            s("section")
        ),
        other => format!("{other} on {page}"),
    };
    ok(json!({"preview": sentence}))
}

pub struct Fakes {
    pub url: String,
    pub state: Arc<Mutex<FakeState>>,
    server: Arc<tiny_http::Server>,
}

impl Drop for Fakes {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

impl Fakes {
    pub fn start() -> anyhow::Result<Self> {
        let server =
            Arc::new(tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("fake services: {e}"))?);
        let url = match server.server_addr().to_ip() {
            Some(addr) => format!("http://{addr}"),
            None => anyhow::bail!("fake services are not on an IP address"),
        };
        let state = Arc::new(Mutex::new(FakeState::default()));
        for _ in 0..4 {
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                while let Ok(mut request) = server.recv() {
                    // A connector that never answers, or answers a byte at a time for half a minute.
                    if request.url().starts_with("/connector/hang") {
                        std::thread::sleep(std::time::Duration::from_secs(20));
                        let _ = request.respond(tiny_http::Response::empty(200));
                        continue;
                    }
                    if request.url().starts_with("/connector/drip") {
                        let drip = Drip { left: 600 };
                        let _ = request.respond(tiny_http::Response::new(200.into(), vec![], drip, None, None));
                        continue;
                    }
                    let mut body = Vec::new();
                    let _ = request.as_reader().take(2 * 1024 * 1024).read_to_end(&mut body);
                    if let Some(rest) = request.url().strip_prefix("/oidc/").map(str::to_owned) {
                        let (path, query) = rest.split_once('?').unwrap_or((&rest, ""));
                        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
                        let (status, headers, reply) = {
                            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                            st.oidc.route(request.method().as_str(), &parts, query, &body)
                        };
                        let mut response = tiny_http::Response::from_data(reply.into_bytes()).with_status_code(status);
                        for (k, v) in headers {
                            if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                                response.add_header(h);
                            }
                        }
                        let _ = request.respond(response);
                        continue;
                    }
                    let headers: Vec<(String, String)> = request
                        .headers()
                        .iter()
                        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_owned()))
                        .collect();
                    let (status, reply_headers, reply) = {
                        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                        route(&mut st, request.method().as_str(), request.url(), &headers, &body)
                    };
                    let mut response =
                        tiny_http::Response::from_data(reply.to_string().into_bytes()).with_status_code(status);
                    for (k, v) in
                        reply_headers.into_iter().chain([("content-type".to_owned(), "application/json".to_owned())])
                    {
                        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                            response.add_header(h);
                        }
                    }
                    let _ = request.respond(response);
                }
            });
        }
        Ok(Self { url, state, server })
    }

    /// Adds (or resets) a Gmail message with these labels.
    pub fn seed_message(&self, id: &str, labels: &[&str]) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.gmail.insert(id.to_owned(), labels.iter().map(|s| (*s).to_owned()).collect());
    }
}

type Reply = (u16, Vec<(String, String)>, Value);

fn ok(v: Value) -> Reply {
    (200, vec![], v)
}

fn err(status: u16, message: &str) -> Reply {
    (status, vec![], json!({"error": {"code": status, "message": message}}))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn route(st: &mut FakeState, method: &str, url: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let parts: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| url::form_urlencoded::parse(s.as_bytes()).map(|(k, _)| k.into_owned()).collect())
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let json_body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if parts.first() == Some(&"_fake") {
        return control(st, method, &parts[1..], &json_body);
    }
    if parts.first() == Some(&"hook") {
        return webhook(st, method, path, query, headers, body);
    }
    if parts.first() == Some(&"connector") {
        return connector(st, parts.get(1).copied().unwrap_or(""), headers, body);
    }
    // Google APIs need a bearer token.
    match header(headers, "authorization").and_then(|a| a.strip_prefix("Bearer ")) {
        Some(token) if !token.is_empty() => {
            if !st.bearer_tokens.iter().any(|t| t == token) {
                st.bearer_tokens.push(token.to_owned());
            }
        }
        _ => return err(401, "missing bearer token"),
    }
    if let Some((status, reply)) =
        crate::fake_google::route(&mut st.google, &st.gmail, method, &parts, query, &json_body)
    {
        return (status, vec![], reply);
    }
    match (method, parts.as_slice()) {
        ("GET", ["gmail", "v1", "users", "me", "messages", id]) => match st.gmail.get(*id) {
            Some(labels) => ok(json!({"id": id, "labelIds": labels})),
            None => err(404, "Requested entity was not found."),
        },
        ("POST", ["gmail", "v1", "users", "me", "messages", id, "modify"]) => {
            let Some(labels) = st.gmail.get_mut(*id) else { return err(404, "Requested entity was not found.") };
            let list = |k: &str| -> Vec<String> {
                json_body
                    .get(k)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            };
            labels.retain(|l| !list("removeLabelIds").contains(l));
            for l in list("addLabelIds") {
                if !labels.contains(&l) {
                    labels.push(l);
                }
            }
            ok(json!({"id": id, "labelIds": labels}))
        }
        ("POST", ["calendar", "v3", "calendars", cal, "events"]) => {
            let id = json_body
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("evt{}", st.events.len() + 1));
            let key = ((*cal).to_owned(), id.clone());
            if st.events.contains_key(&key) {
                return err(409, "The requested identifier already exists.");
            }
            let mut event = json_body.clone();
            event["id"] = json!(id);
            event["htmlLink"] = json!(format!("https://calendar.example/event?eid={id}"));
            st.events.insert(key, event.clone());
            ok(event)
        }
        ("GET", ["calendar", "v3", "calendars", cal, "events", id]) => {
            match st.events.get(&((*cal).to_owned(), (*id).to_owned())) {
                Some(e) => ok(e.clone()),
                None => err(404, "Not Found"),
            }
        }
        ("DELETE", ["calendar", "v3", "calendars", cal, "events", id]) => {
            match st.events.remove(&((*cal).to_owned(), (*id).to_owned())) {
                Some(_) => (204, vec![], Value::Null),
                None => err(410, "Resource has been deleted"),
            }
        }
        _ => err(404, "no such fake route"),
    }
}

fn webhook(
    st: &mut FakeState,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Reply {
    let key = header(headers, "idempotency-key").unwrap_or_default().to_owned();
    let signature = header(headers, "actiongate-signature");
    let delivery = json!({"method": method, "path": path, "idempotency_key": key, "body": String::from_utf8_lossy(body),
                          "signature": signature});
    st.deliveries.push(delivery.clone());
    let name = path.trim_start_matches("/hook/");
    if name.starts_with("redirect") {
        let to: String = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "to")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        return (302, vec![("location".into(), to)], json!({}));
    }
    if let Some((status, reply)) = st.answered.get(&key).filter(|_| !key.is_empty()) {
        return (*status, vec![], reply.clone());
    }
    if name.starts_with("bad") {
        return err(400, "the receiver refuses this payload");
    }
    if let Some(rest) = name.strip_prefix("flaky-") {
        let n: u32 = rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(1);
        let left = st.failures_left.entry(key.clone()).or_insert(n);
        if *left > 0 {
            *left -= 1;
            return err(503, "try again later");
        }
    }
    st.effects.push(delivery);
    let reply = json!({"received": true, "effect": st.effects.len()});
    if !key.is_empty() {
        st.answered.insert(key, (200, reply.clone()));
    }
    ok(reply)
}

/// Whether `signature` (`t=<t>,v1=<hex>`) signs `body` with `secret`, made in the last 5 minutes.
pub fn signed(secret: &str, signature: &str, body: &[u8]) -> bool {
    use hmac::Mac;
    let field = |name: &str| signature.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
    let (Some(t), Some(v1)) = (field("t"), field("v1")) else { return false };
    let Ok(t) = t.parse::<i64>() else { return false };
    if (chrono::Utc::now().timestamp() - t).abs() > 300 {
        return false;
    }
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    expected == v1
}

/// The reference connector (the monetization spec's tier-1 `ADD_AFFILIATE_LINK`): adds a link
/// to a page, refuses one that is already there, answers a repeated idempotency key with its
/// first answer, and on rollback removes exactly what it added. Paths choose misbehaviour:
/// `hang` never answers (for 20 s), `drip` answers a byte every 50 ms (for 30 s),
/// `garbage` answers 200 with something that is not an object, `huge` 200 with 10 MB, `down`
/// 503 and `refuse` 422 with `{error, message}`; `switch` is the site, but answers 503 while a
/// test says it is down. `validate` and `preview` describe the site as it is (see
/// [`site_validate`], [`site_preview`]).
fn connector(st: &mut FakeState, name: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
    let call: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let verified = match (&st.connector_secret, header(headers, "actiongate-signature")) {
        (Some(secret), Some(sig)) => signed(secret, sig, body),
        _ => false,
    };
    let key = header(headers, "idempotency-key").unwrap_or_default().to_owned();
    st.connector_calls
        .push(json!({"name": name, "phase": call["phase"], "action_id": call["action_id"], "idempotency_key": key,
                                   "key_in_body": call["idempotency_key"], "verified": verified}));
    if !verified {
        return (401, vec![], json!({"error": "bad_signature", "message": "the signature does not verify"}));
    }
    match name {
        "garbage" => return (200, vec![], json!("<<not an object>>")),
        "huge" => return (200, vec![], Value::String("x".repeat(10 * 1024 * 1024))),
        "down" => return (503, vec![], json!({"error": "maintenance", "message": "back soon"})),
        "refuse" => return (422, vec![], json!({"error": "page_missing", "message": "no such page"})),
        "redirect" => return (307, vec![("location".into(), "/connector/shop".into())], json!({})),
        "switch" if st.switch_down => {
            return (503, vec![], json!({"error": "outage", "message": "the site is down (test)"}))
        }
        "busy" => {
            return (429, vec![("retry-after".into(), "120".into())], json!({"error": "busy", "message": "slow down"}))
        }
        _ => {}
    }
    match call["phase"].as_str() {
        Some("validate") => return site_validate(st, &call),
        Some("preview") => return site_preview(st, &call),
        _ => {}
    }
    // Replays by the header alone, as most receivers would: the undo's key must differ.
    let replay_key = format!("connector:{key}");
    if let Some((status, reply)) = st.answered.get(&replay_key) {
        return (*status, vec![], reply.clone());
    }
    let page = call["payload"]["page"].as_str().unwrap_or_default().to_owned();
    if !page_exists(&page) {
        return (422, vec![], json!({"error": "page_missing", "message": format!("no page {page:?}")}));
    }
    let reply = match (call["action_type"].as_str(), call["phase"].as_str()) {
        (Some("UPDATE_META_DESCRIPTION"), Some("execute")) => {
            let new = call["payload"]["description"].as_str().unwrap_or_default().to_owned();
            let previous = st.meta.insert(page.clone(), new);
            json!({"output": {"page": page}, "rollback_data": {"page": page, "previous": previous}})
        }
        (Some("UPDATE_META_DESCRIPTION"), Some("rollback")) => {
            let data = &call["rollback_data"];
            let page = data["page"].as_str().unwrap_or_default().to_owned();
            match data["previous"].as_str() {
                Some(old) => st.meta.insert(page, old.to_owned()),
                None => st.meta.remove(&page),
            };
            json!({"output": {"restored": true}})
        }
        (Some("ADD_TO_COLLECTION"), Some("execute")) => {
            let collection = call["payload"]["collection"].as_str().unwrap_or_default().to_owned();
            let pages = st.collections.entry(collection.clone()).or_default();
            if pages.contains(&page) {
                return (
                    409,
                    vec![],
                    json!({"error": "already_in_collection", "message": format!("{page} is in {collection}")}),
                );
            }
            pages.push(page.clone());
            json!({"output": {"collection": collection, "size": pages.len()}, "rollback_data": {"collection": collection, "page": page}})
        }
        (Some("ADD_TO_COLLECTION"), Some("rollback")) => {
            let data = &call["rollback_data"];
            let (collection, page) =
                (data["collection"].as_str().unwrap_or_default(), data["page"].as_str().unwrap_or_default());
            st.collections.entry(collection.to_owned()).or_default().retain(|p| p != page);
            json!({"output": {"removed": true}})
        }
        (Some("GENERATE_INTERNAL_LINK_SUGGESTIONS"), Some("execute")) => {
            // Suggests the other pages the site knows, stored for a human to place.
            let max = call["payload"]["max_suggestions"].as_u64().unwrap_or(5) as usize;
            let known: std::collections::BTreeSet<&String> =
                st.links.keys().chain(st.meta.keys()).chain(st.collections.values().flatten()).collect();
            let picks: Vec<String> = known.into_iter().filter(|p| **p != page).take(max).cloned().collect();
            // Added beside what a human or an earlier run left: the undo takes back only these.
            let stored = st.suggestions.entry(page.clone()).or_default();
            let added: Vec<String> = picks.iter().filter(|p| !stored.contains(p)).cloned().collect();
            stored.extend(added.iter().cloned());
            json!({"output": {"page": page, "suggestions": picks}, "rollback_data": {"page": page, "added": added}})
        }
        (Some("GENERATE_INTERNAL_LINK_SUGGESTIONS"), Some("rollback")) => {
            let data = &call["rollback_data"];
            let added: Vec<&str> =
                data["added"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let stored = st.suggestions.entry(data["page"].as_str().unwrap_or_default().to_owned()).or_default();
            let before = stored.len();
            stored.retain(|s| !added.contains(&s.as_str()));
            json!({"output": {"removed": before - stored.len()}})
        }
        (Some("EXPAND_CONTENT"), Some("execute")) => {
            let sections = st.sections.entry(page.clone()).or_default();
            sections.push(json!({"section": call["payload"]["section"], "text": call["payload"]["text"], "key": key}));
            json!({"output": {"page": page, "sections": sections.len()}, "rollback_data": {"page": page, "key": key}})
        }
        (Some("EXPAND_CONTENT"), Some("rollback")) => {
            let data = &call["rollback_data"];
            let sections = st.sections.entry(data["page"].as_str().unwrap_or_default().to_owned()).or_default();
            sections.retain(|s| s["key"] != data["key"]);
            json!({"output": {"removed": true}})
        }
        (_, phase) => return add_link(st, &call, &page, phase, &replay_key),
    };
    st.answered.insert(replay_key, (200, reply.clone()));
    ok(reply)
}

/// `ADD_AFFILIATE_LINK`: adds a link once; the rollback removes exactly that link.
fn add_link(st: &mut FakeState, call: &Value, page: &str, phase: Option<&str>, replay_key: &str) -> Reply {
    let page = page.to_owned();
    let link = call["payload"]["url"].as_str().unwrap_or_default().to_owned();
    if phase == Some("execute") && !link.starts_with("https://") {
        return (422, vec![], json!({"error": "bad_url", "message": "links are https"}));
    }
    let reply = match phase {
        Some("execute") => {
            let links = st.links.entry(page.clone()).or_default();
            if links.contains(&link) {
                return (
                    409,
                    vec![],
                    json!({"error": "already_linked", "message": format!("{page} already links {link}")}),
                );
            }
            links.push(link.clone());
            json!({"output": {"page": page, "links": links.len()}, "rollback_data": {"page": page, "url": link}})
        }
        Some("rollback") => {
            let data = &call["rollback_data"];
            let (page, url) = (data["page"].as_str().unwrap_or_default(), data["url"].as_str().unwrap_or_default());
            let links = st.links.entry(page.to_owned()).or_default();
            let before = links.len();
            links.retain(|l| l != url);
            json!({"output": {"removed": before - links.len()}})
        }
        _ => return (400, vec![], json!({"error": "bad_phase", "message": "unknown phase"})),
    };
    st.answered.insert(replay_key.to_owned(), (200, reply.clone()));
    ok(reply)
}

fn control(st: &mut FakeState, method: &str, parts: &[&str], body: &Value) -> Reply {
    match (method, parts) {
        ("GET", ["state"]) => {
            let events: Map<String, Value> =
                st.events.iter().map(|((c, e), v)| (format!("{c}/{e}"), v.clone())).collect();
            ok(json!({"gmail": st.gmail, "events": events, "effects": st.effects, "deliveries": st.deliveries}))
        }
        ("POST", ["connector"]) => {
            if let Some(secret) = body.get("secret").and_then(Value::as_str) {
                st.connector_secret = Some(secret.to_owned());
            }
            if let Some(down) = body.get("switch_down").and_then(Value::as_bool) {
                st.switch_down = down;
            }
            ok(json!({"configured": true, "switch_down": st.switch_down}))
        }
        ("GET", ["connector"]) => ok(json!({"links": st.links, "calls": st.connector_calls, "meta": st.meta,
                                             "collections": st.collections, "suggestions": st.suggestions,
                                             "sections": st.sections})),
        ("POST", ["gmail", "messages"]) => {
            let Some(id) = body.get("id").and_then(Value::as_str) else { return err(400, "id is required") };
            let labels = body
                .get("labelIds")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            st.gmail.insert(id.to_owned(), labels);
            ok(json!({"id": id}))
        }
        _ => err(404, "no such control route"),
    }
}
