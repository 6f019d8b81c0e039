//! rollback Lambda: `POST /actions/{id}/rollback` through API Gateway, or a direct invocation
//! with `{action_id, reason?, partial?}`.

use actiongate::config::{aws_config, Config, HandlerConfig};
use actiongate::handlers::{Dependencies, Registry};
use actiongate::ports::store::Store;
use actiongate::services::policy_source::PolicySource;
use actiongate::services::rollback::RollbackService;
use actiongate::telemetry::{self, Startup};
use actiongate::SystemClock;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut startup = Startup::begin();
    telemetry::init(actiongate::config::log_directives());
    startup.step("logging");
    let config = Config::from_env()?;
    let handlers = HandlerConfig::from_env()?;
    startup.step("configuration");
    let aws = aws_config().await;
    startup.step("sdk_config");
    let store: Arc<dyn Store> = Arc::new(config.store(&aws));
    startup.step("dynamodb_client");
    let policy = Arc::new(PolicySource::new(store.clone(), config.policy()?, config.policy_cache));
    startup.step("policy");
    let deps = Dependencies::from_config(&aws, Arc::clone(&store), handlers, policy)?;
    startup.step("handlers");
    let service = Arc::new(RollbackService::new(
        store,
        Registry::with_connectors(&aws, Arc::clone(&deps.guard)),
        deps,
        Arc::new(SystemClock),
    ));
    startup.step("wiring");
    startup.ready();
    run(service_fn(move |event: LambdaEvent<Value>| {
        let service = Arc::clone(&service);
        async move {
            // The template's Timeout for this function, where the runtime gives no deadline.
            let deadline = actiongate::ports::clock::invocation_deadline(
                event.context.deadline,
                chrono::Utc::now(),
                chrono::Duration::seconds(60),
            );
            Ok::<Value, Error>(actiongate::entry::api_rollback::handle(&service, event.payload, deadline).await)
        }
    }))
    .await
}
