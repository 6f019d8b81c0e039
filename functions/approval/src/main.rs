//! approval Lambda: `GET|HEAD /approvals/{token}` (a page, never a change), `POST
//! /approvals/{token}` (the decision), `POST /actions/{id}/approve|reject` (API decisions).

use actiongate::config::{aws_config, Config};
use actiongate::handlers::Registry;
use actiongate::ports::store::Store;
use actiongate::services::approval::ApprovalService;
use actiongate::services::policy_source::PolicySource;
use actiongate::telemetry::{self, Startup};
use actiongate::SystemClock;
use lambda_http::{run, service_fn, Error, Request};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut startup = Startup::begin();
    telemetry::init(actiongate::config::log_directives());
    startup.step("logging");
    let config = Config::from_env()?;
    startup.step("configuration");
    let aws = aws_config().await;
    startup.step("sdk_config");
    let store: Arc<dyn Store> = Arc::new(config.store(&aws));
    startup.step("dynamodb_client");
    let queue = Arc::new(config.work_queue(&aws));
    let policy = config.policy()?;
    startup.step("policy");
    // Connectors are never called here; the registry describes the types the policy declares.
    let registry = Registry::with_connectors_allowing(&aws, "")?;
    let policies = Arc::new(PolicySource::new(store.clone(), policy, config.policy_cache));
    let service = Arc::new(ApprovalService::new(store, queue, registry, Arc::new(SystemClock)).with_policies(policies));
    let console = Arc::new(actiongate::adapters::apigw::console::Console::new(
        actiongate::config::ConsoleConfig::from_env()?.sign_in,
    ));
    startup.step("wiring");
    startup.ready();
    run(service_fn(move |req: Request| {
        let (service, console) = (Arc::clone(&service), Arc::clone(&console));
        async move { Ok::<_, Error>(actiongate::entry::api_approval::handle(&service, &console, req).await) }
    }))
    .await
}
