//! Secrets: signing keys of connectors, by name (AWS Secrets Manager in the functions).

use crate::ports::handler::Secret;
use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No such secret (or not readable by this function): trying again will not help.
    #[error("secret {0} not found")]
    Missing(String),
    /// The secret store could not be reached: trying again may help.
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Secrets: Send + Sync {
    /// The value of the secret `name` (a name or an ARN).
    async fn secret(&self, name: &str) -> Result<Secret, SecretError>;

    /// The value of `name` read again from the store, past any cache (after the target
    /// refused the cached one: the key may have been rotated).
    async fn refreshed(&self, name: &str) -> Result<Secret, SecretError> {
        self.secret(name).await
    }
}
