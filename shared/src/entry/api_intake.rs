//! The intake function's routes: an API Gateway request becomes a call to the intake service.

use crate::adapters::apigw::http;
use crate::ports::api::{ApiError, Reply};
use crate::services::intake::IntakeService;
use lambda_http::{Body, Request, Response};
use tracing::Instrument;

/// Answers one API Gateway request. Never fails: every error becomes a response.
pub async fn handle(service: &IntakeService, req: Request) -> Response<Body> {
    let span = tracing::info_span!("intake", method = %req.method(), path = %req.uri().path(), action_id = tracing::field::Empty);
    async {
        let response = http::respond(route(service, &req).await);
        tracing::info!(status = response.status().as_u16(), "request handled");
        response
    }
    .instrument(span)
    .await
}

/// The OpenAPI 3.1 document of the whole REST API (`openapi/openapi.json`), served as is.
pub const OPENAPI: &str = include_str!("../../../openapi/openapi.json");

/// The document, parsed once (a test checks that it parses and is valid OpenAPI).
fn openapi() -> Result<Reply, ApiError> {
    static DOC: std::sync::LazyLock<Result<serde_json::Value, String>> =
        std::sync::LazyLock::new(|| serde_json::from_str(OPENAPI).map_err(|e| e.to_string()));
    match &*DOC {
        Ok(doc) => Ok(Reply::json(200, doc)),
        Err(e) => Err(ApiError::internal(anyhow::anyhow!("the OpenAPI document does not parse: {e}"))),
    }
}

async fn route(service: &IntakeService, req: &Request) -> Result<Reply, ApiError> {
    let call = http::call(req);
    let segments = http::path_segments(req);
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().as_str();
    let not_allowed = || Err(ApiError::MethodNotAllowed { method: method.to_owned() });
    // The one public route: the API's own description.
    if parts.as_slice() == ["openapi.json"] {
        return if method == "GET" { openapi() } else { not_allowed() };
    }
    let identity = call.identity()?;
    match parts.as_slice() {
        ["actions"] => match method {
            "POST" => service.create(&call, identity).await,
            "GET" => service.list(&call, identity).await,
            _ => not_allowed(),
        },
        ["actions", id] => match method {
            "GET" => service.get(&call, id, identity).await,
            _ => not_allowed(),
        },
        ["actions", id, "audit"] => match method {
            "GET" => service.audit(id, identity).await,
            _ => not_allowed(),
        },
        ["actions", id, "notifications"] => match method {
            "GET" => service.notifications(id, identity).await,
            _ => not_allowed(),
        },
        ["actions", id, verb @ ("cancel" | "done" | "dismiss")] => match method {
            "POST" => service.close(&call, id, verb, identity).await,
            _ => not_allowed(),
        },
        ["approvals"] => match method {
            "GET" => service.inbox(&call, identity).await,
            _ => not_allowed(),
        },
        ["notifications", "key"] => match method {
            "GET" => service.notification_key(identity).await,
            _ => not_allowed(),
        },
        ["action-types"] => match method {
            "GET" => service.action_types().await,
            _ => not_allowed(),
        },
        ["stats"] => match method {
            "GET" => service.stats(&call, identity).await,
            _ => not_allowed(),
        },
        ["rate-limits", action_type] => match method {
            "GET" => service.rate_limits(action_type, identity).await,
            _ => not_allowed(),
        },
        ["admin", "actions"] => match method {
            "GET" => service.admin_list(&call, identity).await,
            _ => not_allowed(),
        },
        ["admin", "policy"] => match method {
            "GET" => service.policy_status(&call, identity).await,
            "PUT" => service.replace_policy(&call, identity).await,
            _ => not_allowed(),
        },
        ["admin", "circuit-breaker"] => match method {
            "GET" => service.breaker_status(&call, identity).await,
            _ => not_allowed(),
        },
        ["admin", "circuit-breaker", "reset"] => match method {
            "POST" => service.breaker_reset(identity).await,
            _ => not_allowed(),
        },
        ["admin", "integrations"] => match method {
            "GET" => service.integrations(identity).await,
            _ => not_allowed(),
        },
        ["admin", "integrations", name] => match method {
            "GET" => service.integration(&call, name, identity).await,
            _ => not_allowed(),
        },
        ["admin", "integrations", name, "reset"] => match method {
            "POST" => service.integration_reset(name, identity).await,
            _ => not_allowed(),
        },
        ["admin", "users", user, "google-token"] => match method {
            "PUT" => service.google_token(&call, user, identity).await,
            _ => not_allowed(),
        },
        ["admin", "users", user, "audit"] => match method {
            "GET" => service.user_audit(&call, user, identity).await,
            _ => not_allowed(),
        },
        ["approvers", email, "delegation"] => match method {
            "GET" | "PUT" | "DELETE" => service.delegation(&call, email, identity, method).await,
            _ => not_allowed(),
        },
        ["admin", "users", user, "kyc"] => match method {
            "GET" | "PUT" => service.kyc(&call, user, identity, method == "PUT").await,
            _ => not_allowed(),
        },
        _ => Err(ApiError::NotFound("route")),
    }
}
