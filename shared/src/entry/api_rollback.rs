//! The rollback function's routes: `POST /actions/{id}/rollback` through API Gateway, or a
//! direct invocation (`{action_id, reason?, partial?}`) from operators and automation.

use crate::adapters::apigw::http;
use crate::ports::api::ApiError;
use crate::services::rollback::RollbackService;
use chrono::{DateTime, Utc};
use lambda_http::request::LambdaRequest;
use serde_json::Value;

/// One invocation: an API Gateway event (answered in its payload format) or a direct one.
pub async fn handle(service: &RollbackService, event: Value, deadline: DateTime<Utc>) -> Value {
    if event.get("requestContext").is_none() {
        return service.invoke(event, deadline).await;
    }
    let request: lambda_http::Request = match serde_json::from_value::<LambdaRequest>(event) {
        Ok(request) => request.into(),
        Err(e) => return http::to_apigw_v2(ApiError::invalid("$", format!("not an API Gateway request: {e}")).into()),
    };
    let call = http::call(&request);
    let segments = http::path_segments(&request);
    // Who is calling comes first: an anonymous request learns nothing about the routes.
    let result = match (call.identity(), segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice()) {
        (Err(e), _) => Err(e),
        (Ok(_), ["actions", id, "rollback"]) if request.method() == "POST" => {
            service.request(&call, id, deadline).await
        }
        (Ok(_), ["actions", _, "rollback"]) => Err(ApiError::MethodNotAllowed { method: request.method().to_string() }),
        (Ok(_), _) => Err(ApiError::NotFound("route")),
    };
    http::to_apigw_v2(http::respond(result))
}
