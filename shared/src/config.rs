//! Configuration from the environment, read once at cold start. The SAM template sets every
//! variable read here (a test checks it).

use crate::policy::{Policy, PolicyError};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// Names of the environment variables, shared with the template consistency test.
/// Opt-in crash simulation for tests (never set by the template): the executor aborts the
/// process right after a side effect and before it is recorded, for actions whose
/// `rate_limit_key` is `fault:abort-after-effect`, on their first attempt.
pub const ACTIONGATE_FAULT_INJECTION: &str = "ACTIONGATE_FAULT_INJECTION";

pub mod vars {
    pub const ACTIONS_TABLE: &str = "ACTIONS_TABLE";
    pub const AUDIT_TABLE: &str = "AUDIT_TABLE";
    pub const WORK_QUEUE_URL: &str = "WORK_QUEUE_URL";
    /// Optional: a policy file to use instead of the one embedded at build time.
    pub const POLICY_FILE: &str = "POLICY_FILE";
    /// The verified SES identity approval mail is sent from.
    pub const SENDER_EMAIL: &str = "SENDER_EMAIL";
    /// Where approval links point (the API's public URL, or a custom domain).
    pub const PUBLIC_BASE_URL: &str = "PUBLIC_BASE_URL";
    /// Optional SES configuration set for delivery events.
    pub const SES_CONFIGURATION_SET: &str = "SES_CONFIGURATION_SET";
    /// How long a function keeps the effective policy before reading the override again.
    pub const POLICY_CACHE_SECS: &str = "POLICY_CACHE_SECS";
    pub const WORK_QUEUE_ARN: &str = "WORK_QUEUE_ARN";
    /// The EventBridge Scheduler group wake-ups are created in, and the role they assume.
    pub const SCHEDULE_GROUP: &str = "SCHEDULE_GROUP";
    pub const SCHEDULER_ROLE_ARN: &str = "SCHEDULER_ROLE_ARN";
    /// Base URLs of the Google APIs (tests point them at local fakes).
    pub const GMAIL_API_BASE: &str = "GMAIL_API_BASE";
    pub const CALENDAR_API_BASE: &str = "CALENDAR_API_BASE";
    pub const DRIVE_API_BASE: &str = "DRIVE_API_BASE";
    /// More `Host`s the MCP endpoint answers (the API's execute-api host beside a custom domain).
    pub const MCP_ALLOWED_HOSTS: &str = "MCP_ALLOWED_HOSTS";
    pub const DOCS_API_BASE: &str = "DOCS_API_BASE";
    pub const TASKS_API_BASE: &str = "TASKS_API_BASE";
    /// Comma-separated hosts and IPs webhooks may reach although they are not public.
    pub const WEBHOOK_ALLOWLIST: &str = "WEBHOOK_ALLOWLIST";
    /// Days a step's rollback snapshot is kept (DynamoDB TTL); default 90.
    pub const ROLLBACK_RETENTION_DAYS: &str = "ROLLBACK_RETENTION_DAYS";
    /// The name or ARN of the Secrets Manager secret status notifications are signed with.
    pub const NOTIFY_SECRET: &str = "NOTIFY_SECRET";

    /// The log filter (`shared/src/telemetry.rs`); the template sets it for every function.
    pub const RUST_LOG: &str = "RUST_LOG";
    /// How the console signs people in: `oidc` (deployed, set by the template) or `dev` (the
    /// local stack's development identity, which only the local gateway accepts).
    pub const CONSOLE_SIGN_IN: &str = "CONSOLE_SIGN_IN";
    /// The OpenID Connect client and endpoints of the issuer the API's JWT authorizer trusts.
    pub const CONSOLE_CLIENT_ID: &str = "CONSOLE_CLIENT_ID";
    pub const OIDC_AUTHORIZE_URL: &str = "OIDC_AUTHORIZE_URL";
    pub const OIDC_TOKEN_URL: &str = "OIDC_TOKEN_URL";

    /// Read when set, deliberately left unset by the template (the embedded policy is the
    /// deployed one).
    pub const UNSET_IN_TEMPLATE: &[&str] = &[POLICY_FILE];
}

/// What the action handlers need (executor and rollback).
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    pub sender: String,
    pub configuration_set: Option<String>,
    pub gmail_base: String,
    pub calendar_base: String,
    pub drive_base: String,
    pub docs_base: String,
    pub tasks_base: String,
    pub webhook_allowlist: String,
}

impl HandlerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            sender: required(vars::SENDER_EMAIL)?,
            configuration_set: optional(vars::SES_CONFIGURATION_SET),
            gmail_base: required(vars::GMAIL_API_BASE)?,
            calendar_base: required(vars::CALENDAR_API_BASE)?,
            drive_base: required(vars::DRIVE_API_BASE)?,
            docs_base: required(vars::DOCS_API_BASE)?,
            tasks_base: required(vars::TASKS_API_BASE)?,
            webhook_allowlist: ConnectorConfig::from_env()?.webhook_allowlist,
        })
    }
}

/// What the mcp function needs: the REST API it calls as the caller, and the hosts it answers.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// The API's own URL (its tools call it with the caller's token).
    pub api_base_url: String,
    /// `Host`s a request may carry (DNS-rebinding protection): the API's, and loopback.
    pub allowed_hosts: Vec<String>,
}

impl McpConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let api_base_url = required(vars::PUBLIC_BASE_URL)?;
        let host = url::Url::parse(&api_base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .ok_or(ConfigError::Invalid(vars::PUBLIC_BASE_URL, "an absolute URL"))?;
        let mut allowed_hosts = vec![host, "localhost".into(), "127.0.0.1".into()];
        allowed_hosts.extend(
            std::env::var(vars::MCP_ALLOWED_HOSTS)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned),
        );
        Ok(Self { api_base_url, allowed_hosts })
    }
}

/// What a function that only asks connectors (intake: `validate` and `preview`) needs.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub webhook_allowlist: String,
}

impl ConnectorConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { webhook_allowlist: std::env::var(vars::WEBHOOK_ALLOWLIST).unwrap_or_default() })
    }
}

/// What the executor needs besides [`Config`].
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub work_queue_arn: String,
    pub schedule_group: String,
    pub scheduler_role_arn: String,
    pub handlers: HandlerConfig,
    pub fault_injection: bool,
}

/// Status notifications' master signing key (executor: signs; intake: gives each user theirs).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The name or ARN of its Secrets Manager secret (`NOTIFY_SECRET`).
    pub secret: String,
}

impl NotifyConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { secret: required(vars::NOTIFY_SECRET)? })
    }
}

impl ExecutorConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            work_queue_arn: required(vars::WORK_QUEUE_ARN)?,
            schedule_group: required(vars::SCHEDULE_GROUP)?,
            scheduler_role_arn: required(vars::SCHEDULER_ROLE_ARN)?,
            handlers: HandlerConfig::from_env()?,
            fault_injection: std::env::var(ACTIONGATE_FAULT_INJECTION).is_ok_and(|v| v == "1"),
        })
    }
}

/// How the console signs people in.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub sign_in: crate::adapters::apigw::console::SignIn,
}

impl ConsoleConfig {
    /// `oidc` unless the environment says `dev`; the OIDC settings may be empty (the console
    /// then cannot sign anyone in, and says so).
    pub fn from_env() -> Result<Self, ConfigError> {
        use crate::adapters::apigw::console::SignIn;
        let sign_in = match optional(vars::CONSOLE_SIGN_IN).as_deref() {
            Some("dev") => SignIn::Dev,
            None | Some("oidc") => SignIn::Oidc {
                client_id: optional(vars::CONSOLE_CLIENT_ID).unwrap_or_default(),
                authorize_url: optional(vars::OIDC_AUTHORIZE_URL).unwrap_or_default(),
                token_url: optional(vars::OIDC_TOKEN_URL).unwrap_or_default(),
            },
            Some(_) => return Err(ConfigError::Invalid(vars::CONSOLE_SIGN_IN, "oidc or dev")),
        };
        Ok(Self { sign_in })
    }
}

/// What a function that sends mail needs.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub sender: String,
    pub public_base_url: String,
    pub configuration_set: Option<String>,
}

impl MailConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            sender: required(vars::SENDER_EMAIL)?,
            public_base_url: required(vars::PUBLIC_BASE_URL)?,
            configuration_set: optional(vars::SES_CONFIGURATION_SET),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {0} must be {1}")]
    Invalid(&'static str, &'static str),
    #[error("cannot read policy file {path}: {error}")]
    PolicyFile { path: String, error: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub actions_table: String,
    pub audit_table: String,
    pub work_queue_url: String,
    pub policy_cache: std::time::Duration,
    pub rollback_retention: chrono::Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            actions_table: required(vars::ACTIONS_TABLE)?,
            audit_table: required(vars::AUDIT_TABLE)?,
            work_queue_url: required(vars::WORK_QUEUE_URL)?,
            policy_cache: std::time::Duration::from_secs(
                std::env::var(vars::POLICY_CACHE_SECS).ok().and_then(|v| v.parse().ok()).unwrap_or(30),
            ),
            rollback_retention: chrono::Duration::days(match std::env::var(vars::ROLLBACK_RETENTION_DAYS) {
                Ok(v) if !v.is_empty() => v
                    .parse::<i64>()
                    .ok()
                    .filter(|d| (1..=3650).contains(d))
                    .ok_or(ConfigError::Invalid(vars::ROLLBACK_RETENTION_DAYS, "a number of days from 1 to 3650"))?,
                _ => crate::ports::store::DEFAULT_ROLLBACK_RETENTION_DAYS,
            }),
        })
    }

    /// The base policy: `POLICY_FILE`'s, or the one embedded at build time; checked whole. A
    /// function that applies the policy reads it at start, so a bad file stops it there (the
    /// approval function does not apply it and does not parse it).
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        match optional(vars::POLICY_FILE) {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError::PolicyFile { path: path.clone(), error: e.to_string() })?;
                Ok(Policy::parse_toml(&text)?)
            }
            None => Ok(Policy::default_policy()),
        }
    }

    /// The store over the configured tables, keeping snapshots for the configured retention.
    pub fn store(&self, aws: &aws_config::SdkConfig) -> crate::adapters::aws::dynamo::DynamoStore {
        crate::adapters::aws::dynamo::DynamoStore::new(
            aws_sdk_dynamodb::Client::new(aws),
            &self.actions_table,
            &self.audit_table,
        )
        .with_snapshot_retention(self.rollback_retention)
        // A write that records a status notification asks for its delivery at once.
        .with_delivery_queue(std::sync::Arc::new(self.work_queue(aws)))
    }

    /// The work queue.
    pub fn work_queue(&self, aws: &aws_config::SdkConfig) -> crate::adapters::aws::sqs::SqsQueue {
        crate::adapters::aws::sqs::SqsQueue::new(
            crate::adapters::aws::lazy::OnFirstUse::aws(aws, aws_sdk_sqs::Client::new),
            &self.work_queue_url,
        )
    }
}

/// `RUST_LOG`, when set and not blank.
pub fn log_directives() -> Option<String> {
    optional(vars::RUST_LOG).filter(|v| !v.trim().is_empty())
}

fn optional(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &'static str) -> Result<String, ConfigError> {
    optional(name).ok_or(ConfigError::Missing(name))
}

/// The roots the AWS SDK's HTTPS client trusts (Amazon Trust Services and the Starfield root
/// that cross-signs them: the CAs of every AWS endpoint), compiled in.
const AWS_TRUST_ROOTS_PEM: &[u8] = include_bytes!("../certs/aws-trust-roots.pem");

/// The AWS SDK configuration: region and `AWS_ENDPOINT_URL` from the standard chain, so the
/// same binary talks to AWS or to the local emulator.
///
/// Three things keep a cold start short. The HTTPS client trusts [`AWS_TRUST_ROOTS_PEM`]
/// instead of reading and parsing every certificate of the system's store, and builds its
/// connector when the first request needs it (see [`LazyHttpsClient`]). And where the
/// credentials are in the environment, as Lambda and cargo lambda put them, the environment is
/// the whole configuration: the credentials and the region are taken from there directly (the
/// default chains would also build profile, SSO, web-identity with an STS client, ECS and
/// instance metadata providers) and no profile file is looked for.
pub async fn aws_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider, TlsContext, TrustStore};
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    match TlsContext::builder().with_trust_store(TrustStore::empty().with_pem_certificate(AWS_TRUST_ROOTS_PEM)).build()
    {
        Ok(tls) => {
            let client = aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(tls)
                .build_https();
            loader = loader.http_client(SharedHttpClient::new(LazyHttpsClient(client)));
        }
        // Cannot happen with the bundle the tests check; the SDK's default client still works.
        Err(e) => tracing::error!(error = %e, "the compiled-in AWS trust roots were refused; using the system's"),
    }
    if optional("AWS_ACCESS_KEY_ID").is_some() && optional("AWS_SECRET_ACCESS_KEY").is_some() {
        use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
        loader = loader
            .credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new())
            .profile_files(EnvConfigFiles::builder().with_contents(EnvConfigFileKind::Config, "").build());
        // The region too (Lambda always sets it): the default chain would build an instance
        // metadata client to ask for it.
        if let Some(region) = optional("AWS_REGION") {
            loader = loader.region(aws_config::Region::new(region));
        }
    }
    loader.load().await
}

/// The SDK's HTTPS client, minus its warm-up. The SDK builds a throwaway connector (TLS
/// configuration included) each time a service client is created, to load the system's
/// certificates early; with compiled-in roots there is nothing to load, and a function that
/// creates three or four clients would build it as many times. The connector is built once,
/// for the first request, and kept.
#[derive(Debug)]
struct LazyHttpsClient(SharedHttpClient);

impl HttpClient for LazyHttpsClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::{pem::PemObject, CertificateDer};

    #[test]
    fn the_aws_trust_roots_are_the_five_amazon_roots_mozilla_trusts() {
        let certs = CertificateDer::pem_slice_iter(AWS_TRUST_ROOTS_PEM)
            .collect::<Result<Vec<_>, _>>()
            .expect("the bundle is PEM");
        assert_eq!(certs.len(), 5, "Amazon Root CA 1-4 and Starfield Services G2");
        for cert in &certs {
            let anchor = webpki::anchor_from_trusted_cert(cert).expect("a parsable root certificate");
            let known = webpki_roots::TLS_SERVER_ROOTS.iter().any(|root| {
                root.subject.as_ref() == anchor.subject.as_ref()
                    && root.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
            });
            assert!(known, "not one of Mozilla's roots: {:?}", String::from_utf8_lossy(anchor.subject.as_ref()));
        }
    }

    #[tokio::test]
    async fn service_clients_accept_the_https_client() {
        // Creating a client builds the HTTPS connector, trust store included (it panics on a
        // certificate it cannot use).
        let aws = aws_config().await;
        assert!(aws.http_client().is_some());
        let _ = aws_sdk_dynamodb::Client::new(&aws);
    }
}
