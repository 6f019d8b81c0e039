//! mcp Lambda: the MCP server over Streamable HTTP at `POST /mcp`, behind the same JWT
//! authorizer as the REST API. Stateless (each request stands alone, as Lambda needs) with JSON
//! answers; every tool calls the REST API with the caller's own bearer token.

use actiongate::config::McpConfig;
use actiongate::telemetry::{self, Startup};
use http_body_util::BodyExt;
use lambda_http::{run, service_fn, Body, Error, Request, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;
use tower_service::Service;

/// The largest JSON-RPC request accepted (a proposal's payload is capped at 64 KiB anyway).
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// The most of an MCP answer passed back (Lambda answers at most 6 MB, base64 included).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut startup = Startup::begin();
    telemetry::init(actiongate::config::log_directives());
    startup.step("logging");
    let config = McpConfig::from_env()?;
    startup.step("configuration");
    // 20 s of waiting, the API's round trip and ours fit in the function's 29 s.
    let tools = actiongate_mcp::ActiongateTools::new(&config.api_base_url, None)?.with_max_wait(20);
    let mcp_config =
        // Stateless: no sessions (a Lambda environment may never see the same client twice), JSON
        // answers, request bodies bounded, `Host` checked.
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_max_request_body_bytes(MAX_REQUEST_BYTES)
            .with_allowed_hosts(config.allowed_hosts.clone());
    let service =
        StreamableHttpService::new(move || Ok(tools.clone()), Arc::new(NeverSessionManager::default()), mcp_config);
    startup.step("wiring");
    startup.ready();
    run(service_fn(move |req: Request| {
        let mut service = service.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = http_body_util::Full::new(bytes::Bytes::from(body.to_vec()));
            let response = match service.call(http::Request::from_parts(parts, body)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            let bytes = match http_body_util::Limited::new(body, MAX_ANSWER_BYTES).collect().await {
                Ok(collected) => collected.to_bytes().to_vec(),
                Err(e) => {
                    tracing::error!(error = %e, "the MCP answer could not be read");
                    return Ok::<_, Error>(
                        Response::builder().status(502).header("content-type", "application/json").body(Body::from(
                            r#"{"error":"bad_gateway","message":"the MCP answer could not be read"}"#,
                        ))?,
                    );
                }
            };
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
    }))
    .await
}
