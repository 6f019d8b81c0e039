//! The approval function's routes: the public approval links (a page for GET and HEAD, a
//! decision for the page's POST), the authenticated `POST /actions/{id}/approve|reject`, and
//! the operator console's static files (`/console/…`: no data, the console calls the API).

use crate::adapters::apigw::console::Console;
use crate::adapters::apigw::{http, pages};
use crate::domain::approval::Decision;
use crate::ports::api::ApiError;
use crate::services::approval::ApprovalService;
use lambda_http::{Body, Request, Response};
use tracing::Instrument;

/// Answers one API Gateway request. Never fails: every error becomes a page or a response.
pub async fn handle(service: &ApprovalService, console: &Console, req: Request) -> Response<Body> {
    let span = tracing::info_span!("approval", method = %req.method(), action_id = tracing::field::Empty);
    async {
        let segments = http::path_segments(&req);
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = req.method().as_str().to_owned();
        let response = match (parts.as_slice(), method.as_str()) {
            (["approvals", token], "GET") => pages::render(service.show(token).await),
            // The same page without its body: a HEAD never changes anything either.
            (["approvals", token], "HEAD") => {
                let (parts, _) = pages::render(service.show(token).await).into_parts();
                Response::from_parts(parts, Body::Empty)
            }
            (["approvals", token], "POST") => match pages::parse_form(req.body().as_ref()) {
                Ok(form) => pages::render(
                    service.decide_by_link(token, form.decision, form.reason, form.payload, &http::meta(&req)).await,
                ),
                Err(sentence) => pages::message(400, "Choose approve or reject", &sentence),
            },
            (["approvals", _], _) => pages::message(405, "Not allowed", "Open the link in a browser."),
            (["console", rest @ ..], "GET") => console.serve(rest),
            (["console", ..], _) => ApiError::MethodNotAllowed { method: method.clone() }.into(),
            (["actions", id, verb @ ("approve" | "reject")], "POST") => {
                let decision = if *verb == "approve" { Decision::Approve } else { Decision::Reject };
                http::respond(service.decide(&http::call(&req), id, decision).await)
            }
            (["actions", _, "approve" | "reject"], _) => ApiError::MethodNotAllowed { method: method.clone() }.into(),
            _ => ApiError::NotFound("route").into(),
        };
        tracing::info!(status = response.status().as_u16(), "request handled");
        response
    }
    .instrument(span)
    .await
}
