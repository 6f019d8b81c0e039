//! Connector secrets from AWS Secrets Manager: read on first use, kept for five minutes (a
//! rotated key is picked up without a deployment).

use crate::adapters::aws::lazy::OnFirstUse;
use crate::ports::handler::Secret;
use crate::ports::secrets::{SecretError, Secrets};
use async_trait::async_trait;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_secretsmanager::Client;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const KEEP: Duration = Duration::from_secs(300);
/// A value read this recently is not read again on a refusal (many refused calls at once
/// make one read, not one each).
const FRESH: Duration = Duration::from_secs(2);

pub struct SecretsManager {
    client: OnFirstUse<Client>,
    cache: Mutex<HashMap<String, (Instant, Secret)>>,
}

impl SecretsManager {
    pub fn new(client: impl Into<OnFirstUse<Client>>) -> Self {
        Self { client: client.into(), cache: Mutex::new(HashMap::new()) }
    }
}

#[async_trait]
impl Secrets for SecretsManager {
    async fn secret(&self, name: &str) -> Result<Secret, SecretError> {
        self.read(name, KEEP).await
    }

    async fn refreshed(&self, name: &str) -> Result<Secret, SecretError> {
        self.read(name, FRESH).await
    }
}

impl SecretsManager {
    /// `name`'s value, from the cache if it was read less than `keep` ago.
    async fn read(&self, name: &str, keep: Duration) -> Result<Secret, SecretError> {
        if let Some((at, value)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            if at.elapsed() < keep {
                return Ok(value.clone());
            }
        }
        let out =
            self.client.get_secret_value().secret_id(name).send().await.map_err(|e| match e.as_service_error() {
                Some(GetSecretValueError::ResourceNotFoundException(_)) => SecretError::Missing(name.to_owned()),
                _ => SecretError::Unavailable(DisplayErrorContext(e).to_string()),
            })?;
        let value = Secret::new(out.secret_string.ok_or_else(|| SecretError::Missing(name.to_owned()))?);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), (Instant::now(), value.clone()));
        Ok(value)
    }
}
