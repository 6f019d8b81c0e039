//! sweep Lambda: invoked by EventBridge Scheduler every few minutes.

use actiongate::adapters::aws::lazy::OnFirstUse;
use actiongate::adapters::aws::ses::SesMailer;
use actiongate::config::{aws_config, Config, MailConfig};
use actiongate::handlers::Registry;
use actiongate::ports::store::Store;
use actiongate::services::notices::ApprovalMail;
use actiongate::services::policy_source::PolicySource;
use actiongate::services::sweep::SweepService;
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
    let mail = MailConfig::from_env()?;
    startup.step("configuration");
    let aws = aws_config().await;
    startup.step("sdk_config");
    let store: Arc<dyn Store> = Arc::new(config.store(&aws));
    startup.step("dynamodb_client");
    let policy = config.policy()?;
    startup.step("policy");
    let queue = Arc::new(config.work_queue(&aws));
    let service = Arc::new(SweepService::new(
        store.clone(),
        queue,
        // The sweep never calls a connector; it asks handlers whether a step may be repeated.
        Registry::with_connectors_allowing(&aws, "")?,
        Arc::new(PolicySource::new(store, policy, config.policy_cache)),
        Some(ApprovalMail {
            mailer: Arc::new(SesMailer::new(
                OnFirstUse::aws(&aws, aws_sdk_sesv2::Client::new),
                mail.sender,
                mail.configuration_set,
            )),
            public_base_url: mail.public_base_url,
        }),
        Arc::new(SystemClock),
    ));
    startup.step("wiring");
    startup.ready();
    run(service_fn(move |event: LambdaEvent<Value>| {
        let service = Arc::clone(&service);
        async move {
            // The schedule's input only identifies the caller; anything else is logged, not fatal.
            if !event.payload.is_object() {
                tracing::warn!(input = %event.payload, "unexpected sweep input; sweeping anyway");
            }
            // The template's Timeout for this function, where the runtime gives no deadline.
            let deadline = actiongate::ports::clock::invocation_deadline(
                event.context.deadline,
                chrono::Utc::now(),
                chrono::Duration::seconds(60),
            );
            Ok::<Value, Error>(serde_json::to_value(service.run(deadline).await)?)
        }
    }))
    .await
}
