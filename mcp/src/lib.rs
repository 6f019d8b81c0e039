//! actiongate's MCP server: the REST API's tools for agents, over stdio (the `actiongate-mcp`
//! binary) or Streamable HTTP (`POST /mcp`, the `mcp` function), built on the official Rust
//! SDK (`rmcp`).
//!
//! One implementation of the tools serves both: each tool is a call to the REST API **as the
//! caller** — the bearer token of the HTTP request, or `ACTIONGATE_TOKEN` for stdio — so an
//! agent sees and may do exactly what it could through the API, and the API's own checks
//! (ownership, policy, rate limits) decide. Refusals are tool results with `isError: true`
//! and structured content `{error, message, retry_after_s?, reasons?, field?}`.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The tools, by name (a contract: agents are configured with these names).
pub const TOOL_NAMES: [&str; 8] = [
    "list_action_types",
    "propose_action",
    "get_action",
    "wait_for_action",
    "list_actions",
    "cancel_action",
    "rollback_action",
    "check_rate_limits",
];

/// The longest `wait_for_action` may wait (the API's `?wait=` bound).
pub const MAX_WAIT_SECS: u64 = 25;
/// The most of an API answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The tools, calling the REST API at `base`.
#[derive(Clone)]
pub struct ActiongateTools {
    http: reqwest::Client,
    base: Arc<str>,
    /// The token stdio uses (`ACTIONGATE_TOKEN`). Over HTTP, each request's own bearer token is
    /// used and this is never consulted.
    token: Option<Arc<str>>,
    /// The longest this server lets `wait_for_action` wait (within its own time limit).
    max_wait: u64,
}

/// One answer of the REST API.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

/// Why a tool call could not be made (before any answer).
#[derive(Debug)]
struct Refusal {
    error: &'static str,
    message: String,
}

impl ActiongateTools {
    /// Tools calling the API at `base` (e.g. `https://api.example.com`); `token` for stdio.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(MAX_WAIT_SECS + 5))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').into(),
            token: token.map(Into::into),
            max_wait: MAX_WAIT_SECS,
        })
    }

    /// These tools, waiting at most `secs` in `wait_for_action` (a Lambda with a 29 s limit
    /// leaves room for the API's own round trip).
    pub fn with_max_wait(mut self, secs: u64) -> Self {
        self.max_wait = secs.min(MAX_WAIT_SECS);
        self
    }

    /// The caller's token: the HTTP request's `Authorization: Bearer …` when there is one (never
    /// the server's own), else the stdio token.
    fn token(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        if let Some(parts) = ctx.extensions.get::<http::request::Parts>() {
            return parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    // `Bearer <token>` in any case, or the bare token (API Gateway takes both).
                    let v = v.trim();
                    match v.split_once(' ') {
                        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
                        _ => v,
                    }
                    .to_owned()
                })
                .filter(|t| !t.is_empty());
        }
        self.token.as_deref().map(str::to_owned)
    }

    async fn api(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, Refusal> {
        let Some(token) = token else {
            return Err(Refusal { error: "unauthorized", message: "no bearer token: the API needs one".into() });
        };
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            request = request.json(b);
        }
        if let Some(k) = idempotency_key {
            request = request.header("idempotency-key", k);
        }
        let response = request.send().await.map_err(|e| Refusal {
            error: "unavailable",
            message: format!("the actiongate API could not be reached: {}", e.without_url()),
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut bytes = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|e| Refusal {
            error: "unavailable",
            message: format!("the actiongate API's answer was cut: {}", e.without_url()),
        })? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Refusal { error: "unavailable", message: "the API's answer is too large".into() });
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"message": String::from_utf8_lossy(&bytes[..bytes.len().min(500)])}));
        Ok(Answer { status, body, retry_after })
    }

    /// The action types the caller may use (`GET /action-types`); empty when unreachable.
    async fn action_types(&self, token: Option<&str>) -> Vec<Value> {
        match self.api(token, reqwest::Method::GET, "/action-types", None, None).await {
            Ok(a) if a.status == 200 => a.body["action_types"].as_array().cloned().unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

fn schema(value: Value) -> Arc<Map<String, Value>> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

fn action_id_property() -> Value {
    json!({"type": "string", "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
           "description": "the action's id (from propose_action)"})
}

/// The tools, with input schemas exact for `action_types` (the caller's, from the API): the
/// payload of each type is described by its own schema.
pub fn tools(action_types: &[Value]) -> Vec<Tool> {
    let names: Vec<Value> = action_types.iter().filter_map(|t| t.get("action_type").cloned()).collect();
    let per_type: Vec<Value> = action_types
        .iter()
        .filter_map(|t| {
            let name = t.get("action_type")?.as_str()?;
            let payload = t.get("payload_schema").cloned().unwrap_or(json!({"type": "object"}));
            Some(json!({"if": {"properties": {"action_type": {"const": name}}, "required": ["action_type"]},
                        "then": {"properties": {"payload": payload}}}))
        })
        .collect();
    let mut action_type = json!({"type": "string", "description": "what to do: one of list_action_types's names"});
    if !names.is_empty() {
        action_type["enum"] = Value::Array(names.clone());
    }
    let step = json!({"type": "object", "description": "a step: {action_type, payload}, or a wait {wait_for: ISO 8601 duration} or {wait_until: RFC 3339 time}",
        "properties": {"action_type": action_type.clone(), "payload": {"type": "object"},
                       "wait_for": {"type": "string"}, "wait_until": {"type": "string", "format": "date-time"}},
        "additionalProperties": false});
    let mut propose = json!({
        "type": "object",
        "properties": {
            "action_type": action_type,
            "payload": {"type": "object", "description": "the action's arguments, as its type's schema says"},
            "steps": {"type": "array", "minItems": 1, "maxItems": 20, "items": step, "description": "a plan: several steps run in order (instead of action_type and payload)"},
            "risk_score": {"type": "integer", "minimum": 0, "maximum": 100, "description": "your estimate of the harm if this is wrong (0-100)"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1, "description": "how sure you are this is right (0-1); low confidence needs approval"},
            "priority": {"type": "integer"},
            "scheduled_for": {"type": "string", "format": "date-time", "description": "not before this time"},
            "rate_limit_key": {"type": "string", "maxLength": 255, "description": "the entity acted on, for per-entity cool-downs"},
            "approver": {"type": "string", "maxLength": 254, "description": "who approves, if the policy allows them: an email address, or group:<name> for everyone in one of the policy's approver groups"},
            "notify_url": {"type": "string", "format": "uri", "maxLength": 2048,
                           "description": "https address told of every decision and end state (signed POST); instead of waiting"},
            "dry_run": {"type": "boolean", "description": "only say what the policy would decide; nothing is stored"},
            "idempotency_key": {"type": "string", "pattern": "^[!-~]{1,255}$",
                                 "description": "repeat it when retrying a call whose answer you lost: the action is created once"}
        },
        "additionalProperties": false
    });
    if !per_type.is_empty() {
        propose["allOf"] = Value::Array(per_type);
    }
    let id_only = json!({"type": "object", "properties": {"action_id": action_id_property()}, "required": ["action_id"], "additionalProperties": false});
    vec![
        Tool::new("list_action_types", "The action types you may propose, each with its tier (1 runs automatically, 2 after a human approves, 3 is done by a human), whether it can be rolled back, and the JSON Schema of its payload.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false}))),
        Tool::new("propose_action", "Propose an action (or a plan of steps). The policy decides: it runs now (queued), waits for a human (an isError result with error needs_approval, its action_id and expiry: do not propose it again, call wait_for_action), is recorded for a human (manual), or is refused (blocked, rate_limited with retry_after_s, invalid_request with the field).",
            schema(propose)),
        Tool::new("get_action", "An action you proposed (or may approve): status, steps, result or error.", schema(id_only.clone())),
        Tool::new("wait_for_action", "Wait until the action changes (a decision, a step, the end) or timeout_s passes; returns the action as it is then.",
            schema(json!({"type": "object", "properties": {"action_id": action_id_property(),
                "timeout_s": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS, "default": MAX_WAIT_SECS}},
                "required": ["action_id"], "additionalProperties": false}))),
        Tool::new("list_actions", "Your actions, newest first, a page at a time.",
            schema(json!({"type": "object", "properties": {
                "status": {"type": "string", "description": "only actions in this status (e.g. awaiting_approval, completed, failed)"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "cursor": {"type": "string", "description": "next_cursor of the previous page"}},
                "additionalProperties": false}))),
        Tool::new("cancel_action", "Cancel an action that has not started.",
            schema(json!({"type": "object", "properties": {"action_id": action_id_property(),
                "reason": {"type": "string", "maxLength": 1000}}, "required": ["action_id"], "additionalProperties": false}))),
        Tool::new("rollback_action", "Undo a completed action from its snapshots; partial undoes what can be undone when some steps cannot.",
            schema(json!({"type": "object", "properties": {"action_id": action_id_property(),
                "reason": {"type": "string", "maxLength": 1000}, "partial": {"type": "boolean"}},
                "required": ["action_id"], "additionalProperties": false}))),
        Tool::new("check_rate_limits", "How much of each rate limit of an action type you have used and when each window resets.",
            schema(json!({"type": "object", "properties": {"action_type": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}},
                "required": ["action_type"], "additionalProperties": false}))),
    ]
}

/// `value` as one path segment.
fn segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>().replace('+', "%20")
}

/// A refusal the agent can act on: `{error, message, retry_after_s?, reasons?, field?}`.
fn refused(answer: &Answer) -> CallToolResult {
    let b = &answer.body;
    let mut out = json!({
        "error": b.get("error").and_then(Value::as_str).map_or_else(|| format!("http_{}", answer.status), str::to_owned),
        "message": b.get("message").and_then(Value::as_str).unwrap_or("the API refused the call"),
        "status": answer.status,
    });
    let retry = answer.retry_after.or_else(|| b.get("retry_after").and_then(Value::as_u64));
    if let Some(s) = retry {
        out["retry_after_s"] = json!(s);
    }
    for k in ["reasons", "field", "action_id", "reason_details"] {
        if let Some(v) = b.get(k).filter(|v| !v.is_null()) {
            out[k] = v.clone();
        }
    }
    CallToolResult::structured_error(out)
}

fn problem(error: &str, message: impl Into<String>) -> CallToolResult {
    CallToolResult::structured_error(json!({"error": error, "message": message.into()}))
}

/// Checks `arguments` against `tool`'s input schema: where (`field`, dotted: `payload.to`)
/// and what is wrong.
fn check_arguments(tool: &Tool, arguments: &Value) -> Result<(), (String, String)> {
    let schema = Value::Object((*tool.input_schema).clone());
    let validator =
        jsonschema::draft202012::new(&schema).map_err(|e| (String::new(), format!("the tool's schema: {e}")))?;
    let errors: Vec<(String, String)> = validator
        .iter_errors(arguments)
        .take(3)
        .map(|e| {
            let field = e.instance_path().to_string().trim_start_matches('/').replace('/', ".");
            (field, e.to_string())
        })
        .collect();
    match errors.first() {
        None => Ok(()),
        Some((field, _)) => {
            Err((field.clone(), errors.iter().map(|(f, m)| format!("{m} (at {f})")).collect::<Vec<_>>().join("; ")))
        }
    }
}

impl ActiongateTools {
    async fn call(&self, name: &str, args: &Value, token: Option<&str>) -> CallToolResult {
        use reqwest::Method;
        let id = || args.get("action_id").and_then(Value::as_str).map(segment).unwrap_or_default();
        let reason = || json!({"reason": args.get("reason").cloned().unwrap_or(Value::Null)});
        let result = match name {
            "list_action_types" => self.api(token, Method::GET, "/action-types", None, None).await,
            "propose_action" => {
                let mut body = args.clone();
                let key = body.as_object_mut().and_then(|o| o.remove("idempotency_key"));
                let key = key.as_ref().and_then(Value::as_str);
                self.api(token, Method::POST, "/actions", Some(&body), key).await
            }
            "get_action" => self.api(token, Method::GET, &format!("/actions/{}", id()), None, None).await,
            "wait_for_action" => {
                let wait = args.get("timeout_s").and_then(Value::as_u64).unwrap_or(self.max_wait).min(self.max_wait);
                self.api(token, Method::GET, &format!("/actions/{}?wait={wait}", id()), None, None).await
            }
            "list_actions" => {
                let query = {
                    let mut query = url::form_urlencoded::Serializer::new(String::new());
                    for k in ["status", "cursor"] {
                        if let Some(v) = args.get(k).and_then(Value::as_str) {
                            query.append_pair(k, v);
                        }
                    }
                    if let Some(v) = args.get("limit").and_then(Value::as_u64) {
                        query.append_pair("limit", &v.to_string());
                    }
                    query.finish()
                };
                let path = if query.is_empty() { "/actions".to_owned() } else { format!("/actions?{query}") };
                self.api(token, Method::GET, &path, None, None).await
            }
            "cancel_action" => {
                self.api(token, Method::POST, &format!("/actions/{}/cancel", id()), Some(&reason()), None).await
            }
            "rollback_action" => {
                let mut body = reason();
                if let Some(p) = args.get("partial") {
                    body["partial"] = p.clone();
                }
                self.api(token, Method::POST, &format!("/actions/{}/rollback", id()), Some(&body), None).await
            }
            "check_rate_limits" => {
                let t = args.get("action_type").and_then(Value::as_str).map(segment).unwrap_or_default();
                self.api(token, Method::GET, &format!("/rate-limits/{t}"), None, None).await
            }
            other => return problem("unknown_tool", format!("no tool {other}")),
        };
        let answer = match result {
            Ok(a) => a,
            Err(r) => return problem(r.error, r.message),
        };
        if !(200..300).contains(&answer.status) {
            return refused(&answer);
        }
        // Created but waiting for a human: the agent must not propose it again.
        if name == "propose_action" && answer.body["status"] == "awaiting_approval" {
            let b = &answer.body;
            return CallToolResult::structured_error(json!({
                "error": "needs_approval",
                "message": format!(
                    "created as {} and waiting for {}'s approval until {}: do not propose it again; call wait_for_action with its action_id",
                    b["action_id"].as_str().unwrap_or("?"),
                    b["approver"].as_str().unwrap_or("an approver"),
                    b["approval_expires_at"].as_str().unwrap_or("its expiry")
                ),
                "action_id": b["action_id"],
                "status": b["status"],
                "approval_expires_at": b["approval_expires_at"],
                "approver": b["approver"],
                "approvers": b["approvers"],
                "approvals_required": b["approvals_required"],
                "reasons": b["reasons"],
            }));
        }
        CallToolResult::structured(answer.body)
    }
}

impl ServerHandler for ActiongateTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("actiongate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Propose real-world actions through actiongate: the policy runs them, asks a human, or refuses. \
                 Start with list_action_types; propose_action; then wait_for_action until it ends.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let token = self.token(&context);
        let types = self.action_types(token.as_deref()).await;
        Ok(ListToolsResult::with_all_items(tools(&types)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.as_ref();
        if !TOOL_NAMES.contains(&name) {
            return Err(McpError::invalid_params(format!("no tool named {name}"), None));
        }
        let token = self.token(&context);
        let args = Value::Object(request.arguments.unwrap_or_default());
        // The input schema the caller was shown, for this caller's types.
        let types = if name == "propose_action" { self.action_types(token.as_deref()).await } else { Vec::new() };
        let tool = tools(&types).into_iter().find(|t| t.name == name);
        if let Some(tool) = &tool {
            if let Err((field, why)) = check_arguments(tool, &args) {
                let mut refusal = json!({"error": "invalid_arguments", "message": why});
                if !field.is_empty() {
                    refusal["field"] = json!(field);
                }
                return Ok(CallToolResult::structured_error(refusal).into());
            }
        }
        Ok(self.call(name, &args, token.as_deref()).await.into())
    }
}
