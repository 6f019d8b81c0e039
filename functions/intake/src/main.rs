//! intake Lambda: the agent-facing API (create, read, list, audit, cancel, rate limits, dry run)
//! and approval requests by mail.

use actiongate::adapters::aws::lazy::OnFirstUse;
use actiongate::adapters::aws::ses::SesMailer;
use actiongate::config::{aws_config, Config, MailConfig};
use actiongate::handlers::notify::SignedDelivery;
use actiongate::handlers::webhook::{AddressGuard, Allowlist};
use actiongate::handlers::Registry;
use actiongate::ports::store::Store;
use actiongate::services::intake::IntakeService;
use actiongate::services::notices::ApprovalMail;
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
    let mail = MailConfig::from_env()?;
    let connectors = actiongate::config::ConnectorConfig::from_env()?;
    let notify = actiongate::config::NotifyConfig::from_env()?;
    startup.step("configuration");
    let aws = aws_config().await;
    startup.step("sdk_config");
    let store: Arc<dyn Store> = Arc::new(config.store(&aws));
    startup.step("dynamodb_client");
    let policy = config.policy()?;
    startup.step("policy");
    let queue = Arc::new(config.work_queue(&aws));
    let mailer = Arc::new(SesMailer::new(
        OnFirstUse::aws(&aws, aws_sdk_sesv2::Client::new),
        mail.sender,
        mail.configuration_set,
    ));
    let approval_mail = ApprovalMail { mailer, public_base_url: mail.public_base_url };
    let guard = Arc::new(AddressGuard::new(Allowlist::parse(&connectors.webhook_allowlist))?);
    let keys = SignedDelivery::from_secrets_manager(&aws, guard, &notify.secret);
    let policies = Arc::new(PolicySource::new(store.clone(), policy, config.policy_cache));
    // Read-only: what a Gmail change's message looks like when approval is asked for.
    let lookups = actiongate::handlers::Dependencies::from_config(
        &aws,
        store.clone(),
        actiongate::config::HandlerConfig::from_env()?,
        policies.clone(),
    )?;
    let service = Arc::new(
        IntakeService::new(
            store.clone(),
            queue,
            policies,
            approval_mail,
            // Connectors that serve `validate` and `preview` are asked at intake.
            Registry::with_connectors_allowing(&aws, &connectors.webhook_allowlist)?,
            Arc::new(SystemClock),
        )
        .with_notification_keys(Arc::new(keys))
        .with_lookups(Arc::new(lookups)),
    );
    startup.step("wiring");
    startup.ready();
    run(service_fn(move |req: Request| {
        let service = Arc::clone(&service);
        async move { Ok::<_, Error>(actiongate::entry::api_intake::handle(&service, req).await) }
    }))
    .await
}
