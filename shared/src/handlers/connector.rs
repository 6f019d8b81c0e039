//! The connector handler: runs a declared action type by calling the integrator's endpoint.
//!
//! `POST <url>` with `{phase, action_id, step, action_type, user_id, payload, idempotency_key,
//! rollback_data?}`, headers `Idempotency-Key` and `Actiongate-Signature: t=<unix seconds>,
//! v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. A 2xx answers `{output?, rollback_data?}`:
//! `output` is the step's result, `rollback_data` comes back with the `rollback` call.
//! `validate` and `preview` are asked at intake, before the action exists (`action_id` and
//! `idempotency_key` are null, no `Idempotency-Key` header): a 2xx accepts (and `preview`
//! answers `{preview}`), a 4xx refuses. 408, 429,
//! 5xx, timeouts and lost connections are transient; any other status is permanent, with the
//! connector's `{error, message}` (`connector_<status>`). Every answer is read to at most
//! 1 MiB; anything unreadable is kept as text, never a crash.

use super::{read_capped, Consultation, GuardedHttp, Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use crate::domain::connectors::{Connector, Phase};
use crate::domain::policy::Policy;
use crate::domain::{ActionId, UserId};
use crate::ports::handler::DeclaredHandlers;
use crate::ports::secrets::{SecretError, Secrets};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::Arc;

/// The most of a connector's answer that is read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The most of `output` and of `rollback_data` kept with the step (the action is one stored
/// item of at most 400 KB).
const MAX_KEPT_BYTES: usize = 32 * 1024;

/// The key a phase's call carries: the step's for `execute`, `<key>-rollback` for `rollback`
/// (a connector that replays by key never answers an undo with the change's answer).
fn phase_key(step_key: &str, phase: Phase) -> String {
    match phase {
        Phase::Rollback => format!("{step_key}-rollback"),
        _ => step_key.to_owned(),
    }
}

/// `value`, or why it is not kept (too large to store with the step).
fn kept(value: Option<&Value>) -> Result<Value, String> {
    let value = value.cloned().unwrap_or(Value::Null);
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |b| b.len());
    if size > MAX_KEPT_BYTES {
        return Err(format!("{size} bytes (at most {MAX_KEPT_BYTES} are kept)"));
    }
    Ok(value)
}

/// Where a connector is, for messages agents can read: scheme, host and port, no path or query.
fn shown(url: &url::Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?"))
        + &url.port().map(|p| format!(":{p}")).unwrap_or_default()
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
/// `None` only if the HMAC implementation refused the key (HMAC takes keys of any length).
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    Some(format!("t={t},v1={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// Builds the handler of a declared type from the policy in force.
pub struct Connectors {
    secrets: Arc<dyn Secrets>,
    http: Arc<dyn GuardedHttp>,
}

impl Connectors {
    pub fn new(secrets: Arc<dyn Secrets>, http: Arc<dyn GuardedHttp>) -> Self {
        Self { secrets, http }
    }
}

impl DeclaredHandlers for Connectors {
    fn handler(&self, action_type: &str, policy: &Policy) -> Option<Arc<dyn Handler>> {
        let rule = policy.types.get(action_type)?;
        let name = rule.connector.as_ref()?;
        let connector = policy.connectors.get(name)?.clone();
        Some(Arc::new(ConnectorHandler {
            name: name.clone(),
            action_type: action_type.to_owned(),
            description: rule.description.clone(),
            reversible: rule.reversible && connector.serves(Phase::Rollback),
            connector,
            secrets: Arc::clone(&self.secrets),
            http: Arc::clone(&self.http),
        }))
    }
}

pub struct ConnectorHandler {
    /// The connector's name in the policy (its circuit breaker is `connector:<name>`).
    name: String,
    action_type: String,
    description: Option<String>,
    reversible: bool,
    connector: Connector,
    secrets: Arc<dyn Secrets>,
    http: Arc<dyn GuardedHttp>,
}

/// One call to a connector: what the body says, and how long it may take.
struct Call<'a> {
    phase: Phase,
    /// `None` before the action exists (`validate`, `preview`).
    action_id: Option<ActionId>,
    step: usize,
    user: &'a UserId,
    payload: &'a Value,
    idempotency_key: Option<String>,
    rollback_data: Option<&'a Value>,
    timeout: std::time::Duration,
}

impl ConnectorHandler {
    /// Sends `call`, signed; a 2xx answer's JSON (`None` when it is not JSON) and its raw bytes.
    /// Every other status is an error: 408, 429 and 5xx transient (with `Retry-After`), any
    /// other permanent (`connector_<status>`, with the connector's `{error, message}`).
    async fn send(&self, call: Call<'_>) -> Result<(Option<Value>, Vec<u8>), HandlerError> {
        let url = url::Url::parse(&self.connector.url).map_err(|e| {
            HandlerError::permanent("connector_url", format!("the connector's URL does not parse: {e}"))
        })?;
        self.http.check(&url)?;
        let mut body = json!({
            "phase": call.phase.as_str(),
            "action_id": call.action_id,
            "step": call.step,
            "action_type": self.action_type,
            "user_id": call.user,
            "payload": call.payload,
            "idempotency_key": call.idempotency_key,
        });
        if let Some(data) = call.rollback_data {
            body["rollback_data"] = data.clone();
        }
        let raw = serde_json::to_vec(&body).map_err(|e| HandlerError::permanent("encoding", e.to_string()))?;
        let key = self.key(false).await?;
        let mut answer = self.post(&url, &raw, &key, &call).await?;
        if answer.0 == 401 {
            // Refused our signature: the key may have been rotated since it was cached. Signed
            // again with the stored key once, if it differs (same body, same Idempotency-Key).
            let fresh = self.key(true).await?;
            if fresh.expose() != key.expose() {
                answer = self.post(&url, &raw, &fresh, &call).await?;
            }
        }
        let (status, retry_after, bytes, truncated) = answer;
        let answer: Option<Value> = if truncated { None } else { serde_json::from_slice(&bytes).ok() };
        if (200..300).contains(&status) {
            return Ok((answer, bytes));
        }
        let said = |k: &str| answer.as_ref().and_then(|a| a.get(k)).and_then(Value::as_str).map(str::to_owned);
        let message = match (said("error"), said("message")) {
            (Some(e), Some(m)) => format!("{e}: {m}"),
            (Some(e), None) => e,
            (None, Some(m)) => m,
            (None, None) => String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
        };
        let message: String = message.chars().take(500).collect();
        let code = format!("connector_{status}");
        Err(if status == 408 || status == 429 || status >= 500 {
            HandlerError::transient(code, message).retry_after(retry_after)
        } else {
            HandlerError::permanent(code, message)
        })
    }

    /// The connector's signing key: cached, or (`fresh`) read again from the store.
    async fn key(&self, fresh: bool) -> Result<crate::ports::handler::Secret, HandlerError> {
        let read = if fresh {
            self.secrets.refreshed(&self.connector.secret).await
        } else {
            self.secrets.secret(&self.connector.secret).await
        };
        read.map_err(|e| match e {
            SecretError::Missing(_) => HandlerError::permanent("secret_missing", e.to_string()),
            SecretError::Unavailable(_) => HandlerError::transient("secret_unavailable", e.to_string()),
        })
    }

    /// One signed POST of `raw`: the status, its `Retry-After`, the answer read to at most
    /// [`MAX_ANSWER_BYTES`], and whether it was cut there.
    async fn post(
        &self,
        url: &url::Url,
        raw: &[u8],
        key: &crate::ports::handler::Secret,
        call: &Call<'_>,
    ) -> Result<(u16, Option<u64>, Vec<u8>, bool), HandlerError> {
        let t = chrono::Utc::now().timestamp();
        let signed = signature(key.expose().as_bytes(), t, raw)
            .ok_or_else(|| HandlerError::permanent("secret_unusable", "the connector's key cannot sign"))?;
        let mut request = self
            .http
            .client_without_redirects()
            .post(url.clone())
            .timeout(call.timeout)
            .header("content-type", "application/json")
            .header("actiongate-signature", signed);
        if let Some(k) = &call.idempotency_key {
            request = request.header("idempotency-key", k.as_str());
        }
        let response = request
            .body(raw.to_vec())
            .send()
            .await
            .map_err(|e| HandlerError::from_reqwest(&e.without_url(), &format!("connector {}", shown(url))))?;
        let status = response.status().as_u16();
        let retry_after = super::retry_after_secs(&response);
        let (bytes, truncated) = read_capped(response, MAX_ANSWER_BYTES, &shown(url)).await?;
        Ok((status, retry_after, bytes, truncated))
    }

    /// `execute` or `rollback` of a step: the step's result (`output`, and `rollback_data` or
    /// why there is none).
    async fn call(
        &self,
        ctx: &StepContext<'_>,
        phase: Phase,
        rollback_data: Option<&Value>,
    ) -> Result<Value, HandlerError> {
        let (answer, bytes) = self
            .send(Call {
                phase,
                action_id: Some(ctx.action_id),
                step: ctx.step,
                user: ctx.user,
                payload: ctx.payload,
                idempotency_key: Some(phase_key(&ctx.idempotency_key, phase)),
                rollback_data,
                timeout: std::time::Duration::from_secs(self.connector.timeout.as_secs()),
            })
            .await?;
        // It took effect (2xx): what it said is kept if it fits; an undo needs its rollback
        // data, so a step without usable rollback data says why and cannot be undone.
        let (output, rollback) = match &answer {
            Some(v) if v.is_object() => (kept(v.get("output")), kept(v.get("rollback_data"))),
            _ => (
                Ok(json!({"unparsed": String::from_utf8_lossy(&bytes[..bytes.len().min(1024)])})),
                Err("the answer was not a JSON object".to_owned()),
            ),
        };
        let mut result = json!({"output": output.unwrap_or_else(|why| json!({"dropped": why}))});
        match rollback {
            Ok(data) => result["rollback_data"] = data,
            Err(why) => result["rollback_data_missing"] = json!(why),
        }
        Ok(result)
    }

    /// `validate` or `preview`: the connector's answer object (`{}` when it sent none).
    async fn ask(&self, question: &Consultation<'_>) -> Result<Value, HandlerError> {
        let timeout = question.budget.min(std::time::Duration::from_secs(self.connector.timeout.as_secs()));
        if timeout.is_zero() {
            return Err(HandlerError::transient("timeout", "no time was left to ask the connector"));
        }
        let (answer, _) = self
            .send(Call {
                phase: question.phase,
                action_id: None,
                step: question.step,
                user: question.user,
                payload: question.payload,
                idempotency_key: None,
                rollback_data: None,
                timeout,
            })
            .await?;
        Ok(answer.filter(Value::is_object).unwrap_or_else(|| json!({})))
    }
}

impl Handler for ConnectorHandler {
    /// The payload was checked against the type's schema at intake.
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        if payload.is_object() {
            Ok(())
        } else {
            Err(HandlerError::permanent("invalid_payload", "a declared type's payload is a JSON object"))
        }
    }

    fn preview(&self, _: &Value) -> String {
        match &self.description {
            Some(d) => format!("{}: {d}", self.action_type),
            None => self.action_type.clone(),
        }
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        if self.reversible {
            Reversibility::Reversible
        } else {
            Reversibility::Irreversible
        }
    }

    /// Every call carries the step's `Idempotency-Key`; the protocol asks connectors to honour it.
    fn idempotent(&self) -> bool {
        true
    }

    fn integration(&self, _: &Value) -> Option<String> {
        Some(format!("connector:{}", self.name))
    }

    /// The connector's URL and secret, digested: a retry or an undo after the policy pointed
    /// the type elsewhere fails for a human instead of acting at a target that never saw it.
    fn pin(&self) -> Option<String> {
        let what = format!("{}\n{}", self.connector.url, self.connector.secret);
        Some(format!("connector:{}", &crate::domain::digest::hex_sha256(what.as_bytes())[..16]))
    }

    fn consult<'a>(&'a self, question: &'a Consultation<'a>) -> Option<HandlerFuture<'a, Result<Value, HandlerError>>> {
        if !matches!(question.phase, Phase::Validate | Phase::Preview) || !self.connector.serves(question.phase) {
            return None;
        }
        Some(Box::pin(self.ask(question)))
    }

    /// `rollback_data` goes with the step's snapshot item: kept for the rollback retention and
    /// never shown (it may hold what the target looked like); the result says it was kept.
    fn keep_for_undo(&self, mut result: Value) -> (Value, Option<Value>) {
        match result.as_object_mut().and_then(|o| o.remove("rollback_data")) {
            Some(data) => {
                result["rollback_data_kept"] = json!(true);
                (result, Some(json!({"rollback_data": data})))
            }
            None => (result, None),
        }
    }

    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(self.call(ctx, Phase::Execute, None))
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
        snapshot: &'a Value,
        result: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            if !self.reversible {
                return Err(HandlerError::permanent("not_reversible", "the connector serves no rollback"));
            }
            if let Some(why) = result.get("rollback_data_missing").and_then(Value::as_str) {
                return Err(HandlerError::permanent(
                    "rollback_data_missing",
                    format!("the connector's rollback data was not kept ({why}): a human undoes it"),
                ));
            }
            // Kept with the snapshot; steps recorded before that kept it in their result.
            let data =
                snapshot.get("rollback_data").or_else(|| result.get("rollback_data")).cloned().unwrap_or(Value::Null);
            let mut undone = self.call(ctx, Phase::Rollback, Some(&data)).await?;
            // What the undo's answer says for undoing it is of no use: nothing undoes an undo.
            if let Some(o) = undone.as_object_mut() {
                o.remove("rollback_data");
                o.remove("rollback_data_missing");
            }
            Ok(undone)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_time_and_body() {
        // Python: hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"key", 1_700_000_000, br#"{"a":1}"#).as_deref(),
            Some("t=1700000000,v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03")
        );
    }
}
