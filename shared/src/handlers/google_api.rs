//! What the Google Workspace handlers share: request URLs built from a configured base with
//! percent-encoded path segments and query values, calls with the user's bearer token, and
//! answers read bounded and classified.

use super::{read_capped, HandlerError, StepContext};
use crate::domain::google_payloads;
use serde_json::Value;
use url::Url;

/// The most of an answer a handler reads.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// `base` followed by `segments` (each percent-encoded as one segment) and `query` (encoded
/// pairs, in order; a name may repeat).
pub fn api_url(base: &str, segments: &[&str], query: &[(&str, &str)], what: &str) -> Result<Url, HandlerError> {
    let mut url = Url::parse(base.trim())
        .map_err(|e| HandlerError::permanent("not_configured", format!("the {what} base URL {base:?}: {e}")))?;
    {
        let mut path = url.path_segments_mut().map_err(|()| {
            HandlerError::permanent("not_configured", format!("the {what} base URL {base:?} cannot take a path"))
        })?;
        path.pop_if_empty();
        path.extend(segments);
    }
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query {
            pairs.append_pair(name, value);
        }
    }
    Ok(url)
}

/// One answer of a Google API, read bounded.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The body as JSON (`Null` when it is not JSON or was cut).
    pub json: Value,
    /// The start of the body, for error messages.
    pub text: String,
    /// The body was longer than the cap.
    pub truncated: bool,
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error this (failed) answer stands for: 429, 408 and 5xx transient (waiting as long
    /// as `Retry-After` asks), other statuses permanent.
    pub fn error(&self, what: &str) -> HandlerError {
        let e = HandlerError::from_status(self.status, what, &self.text);
        if e.is_transient() {
            e.retry_after(self.retry_after)
        } else {
            e
        }
    }

    /// The JSON object of a successful answer; the error of a failed one.
    pub fn into_object(self, what: &str) -> Result<Value, HandlerError> {
        if !self.is_success() {
            return Err(self.error(what));
        }
        if self.truncated {
            return Err(HandlerError::permanent(
                "bad_response",
                format!("{what} answered more than {MAX_ANSWER_BYTES} bytes"),
            ));
        }
        if !self.json.is_object() {
            return Err(HandlerError::permanent(
                "bad_response",
                format!("{what} answered something that is not a JSON object"),
            ));
        }
        Ok(self.json)
    }
}

/// Sends `method url` (with `body` as JSON) with the user's Google token and reads at most
/// [`MAX_ANSWER_BYTES`] of the answer. Transport failures are classified by
/// [`HandlerError::from_reqwest`]; the status is left to the caller.
pub async fn call(
    ctx: &StepContext<'_>,
    method: reqwest::Method,
    url: Url,
    body: Option<&Value>,
    what: &str,
) -> Result<Answer, HandlerError> {
    call_capped(ctx, method, url, body, MAX_ANSWER_BYTES, what).await
}

/// [`call`], reading at most `cap` bytes.
pub async fn call_capped(
    ctx: &StepContext<'_>,
    method: reqwest::Method,
    url: Url,
    body: Option<&Value>,
    cap: usize,
    what: &str,
) -> Result<Answer, HandlerError> {
    let token = ctx.google_token().await?;
    let mut request = ctx.deps.http.request(method, url).bearer_auth(token.expose());
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| HandlerError::from_reqwest(&e, what))?;
    read_answer(response, cap, what).await
}

/// Reads at most `cap` bytes of `response`.
pub async fn read_answer(response: reqwest::Response, cap: usize, what: &str) -> Result<Answer, HandlerError> {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let (bytes, truncated) = read_capped(response, cap, what).await?;
    let json = if truncated { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]).into_owned();
    Ok(Answer { status, json, text, truncated, retry_after })
}

/// `Retry-After` in seconds, when given as a number.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

/// The strings of a JSON array (others skipped).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// A string field of a payload (`""` when absent: payloads are validated first).
pub fn field<'a>(payload: &'a Value, name: &str) -> &'a str {
    payload.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// The payload of `action_type` checked again at execution time.
pub fn check(action_type: &str, payload: &Value) -> Result<(), HandlerError> {
    match google_payloads::validate(action_type, payload, "payload") {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(HandlerError::permanent("invalid_payload", e.to_string())),
        None => Err(HandlerError::permanent("invalid_payload", format!("{action_type} is not a Google action type"))),
    }
}

/// The preview sentence of `action_type`.
pub fn preview(action_type: &str, payload: &Value) -> String {
    google_payloads::describe(action_type, payload).unwrap_or_else(|| action_type.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_query_values_are_encoded() {
        let url = api_url(
            "http://127.0.0.1:9/drive/v3/",
            &["files", "a b/c?"],
            &[("q", "appProperties has { key='k' and value='v' }"), ("fields", "id,parents")],
            "Drive",
        )
        .unwrap();
        assert!(url.as_str().starts_with("http://127.0.0.1:9/drive/v3/files/a%20b%2Fc%3F?q="), "{url}");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0].1, "appProperties has { key='k' and value='v' }");
        assert_eq!(pairs[1], ("fields".to_owned(), "id,parents".to_owned()));
        let plain =
            api_url("https://tasks.googleapis.com/tasks/v1", &["lists", "@default", "tasks"], &[], "Tasks").unwrap();
        assert_eq!(plain.as_str(), "https://tasks.googleapis.com/tasks/v1/lists/@default/tasks");
        let docs = api_url("https://docs.googleapis.com/v1", &["documents", "d1:batchUpdate"], &[], "Docs").unwrap();
        assert_eq!(docs.as_str(), "https://docs.googleapis.com/v1/documents/d1:batchUpdate");
        assert!(api_url("not a url", &[], &[], "Docs").is_err());
    }

    #[test]
    fn failed_answers_are_classified() {
        let answer =
            |status| Answer { status, json: Value::Null, text: String::new(), truncated: false, retry_after: Some(30) };
        assert!(answer(503).error("x").is_transient());
        assert_eq!(answer(429).error("x").retry_after_secs, Some(30));
        assert!(!answer(404).error("x").is_transient());
        assert!(answer(200).into_object("x").is_err());
    }
}
