//! executor Lambda: an SQS event source (ReportBatchItemFailures) delivering work messages.

use actiongate::adapters::aws::lazy::OnFirstUse;
use actiongate::adapters::aws::scheduler::WakeUpScheduler;
use actiongate::config::{aws_config, Config, ExecutorConfig, NotifyConfig};
use actiongate::handlers::notify::SignedDelivery;
use actiongate::handlers::{Dependencies, Registry};
use actiongate::ports::store::Store;
use actiongate::services::executor::ExecutorService;
use actiongate::services::policy_source::PolicySource;
use actiongate::telemetry::{self, Startup};
use actiongate::SystemClock;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut startup = Startup::begin();
    telemetry::init(actiongate::config::log_directives());
    startup.step("logging");
    let config = Config::from_env()?;
    let exec = ExecutorConfig::from_env()?;
    let notify = NotifyConfig::from_env()?;
    startup.step("configuration");
    let aws = aws_config().await;
    startup.step("sdk_config");
    let store: Arc<dyn Store> = Arc::new(config.store(&aws));
    startup.step("dynamodb_client");
    let policy = Arc::new(PolicySource::new(store.clone(), config.policy()?, config.policy_cache));
    startup.step("policy");
    let deps = Dependencies::from_config(&aws, Arc::clone(&store), exec.handlers, policy)?;
    startup.step("handlers");
    let scheduler = WakeUpScheduler::new(
        OnFirstUse::aws(&aws, aws_sdk_scheduler::Client::new),
        exec.schedule_group,
        exec.scheduler_role_arn,
        exec.work_queue_arn,
    );
    let notifications = SignedDelivery::from_secrets_manager(&aws, Arc::clone(&deps.guard), &notify.secret);
    let service = Arc::new(
        ExecutorService::new(
            store,
            Arc::new(config.work_queue(&aws)),
            Arc::new(scheduler),
            Registry::with_connectors(&aws, Arc::clone(&deps.guard)),
            deps,
            Arc::new(SystemClock),
            exec.fault_injection,
        )
        .with_notifications(Arc::new(notifications)),
    );
    startup.step("wiring");
    startup.ready();
    run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let service = Arc::clone(&service);
        async move {
            // The template's Timeout for this function, where the runtime gives no deadline.
            let deadline = actiongate::ports::clock::invocation_deadline(
                event.context.deadline,
                chrono::Utc::now(),
                chrono::Duration::seconds(30),
            );
            Ok::<SqsBatchResponse, Error>(
                actiongate::entry::sqs_batch::handle_batch(&service, event.payload, deadline).await,
            )
        }
    }))
    .await
}
