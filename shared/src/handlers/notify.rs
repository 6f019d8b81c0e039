//! Status notifications, posted signed like connector calls: `Actiongate-Signature: t=<unix
//! seconds>,v1=<hex HMAC-SHA256(key, "<t>.<raw body>")>` with the requester's own receiver key
//! (derived from the master key in Secrets Manager), the
//! `Idempotency-Key` the event's id, through the same address guard as webhooks and connectors,
//! following no redirect.

use super::connector::signature;
use super::read_capped;
use crate::domain::notify::{receiver_key, DELIVERY_TIMEOUT_SECS};
use crate::domain::UserId;
use crate::ports::handler::{GuardedHttp, HandlerError};
use crate::ports::notify::Deliverer;
use crate::ports::secrets::{SecretError, Secrets};
use async_trait::async_trait;
use std::sync::Arc;

/// How much of a receiver's answer is read and dropped (only its status matters; the body is
/// never kept).
const MAX_ANSWER_BYTES: usize = 4096;

pub struct SignedDelivery {
    secrets: Arc<dyn Secrets>,
    http: Arc<dyn GuardedHttp>,
    /// The name or ARN of the signing key's secret.
    secret: String,
}

impl SignedDelivery {
    /// Deliveries whose key is read from Secrets Manager (`secret`, a name or ARN).
    pub fn from_secrets_manager(aws: &aws_config::SdkConfig, http: Arc<dyn GuardedHttp>, secret: &str) -> Self {
        let secrets = crate::adapters::aws::secrets::SecretsManager::new(crate::adapters::aws::lazy::OnFirstUse::aws(
            aws,
            aws_sdk_secretsmanager::Client::new,
        ));
        Self::new(Arc::new(secrets), http, secret)
    }

    pub fn new(secrets: Arc<dyn Secrets>, http: Arc<dyn GuardedHttp>, secret: impl Into<String>) -> Self {
        Self { secrets, http, secret: secret.into() }
    }
}

#[async_trait]
impl Deliverer for SignedDelivery {
    async fn receiver_key(&self, user: &UserId) -> Result<String, HandlerError> {
        let master = self.secrets.secret(&self.secret).await.map_err(|e| match e {
            // Missing is a deployment fault, not the receiver's: try again (a fix lands in time).
            SecretError::Missing(_) | SecretError::Unavailable(_) => {
                HandlerError::transient("secret_unavailable", e.to_string())
            }
        })?;
        receiver_key(master.expose().as_bytes(), user)
            .ok_or_else(|| HandlerError::transient("secret_unusable", "the notification key cannot sign"))
    }

    async fn deliver(&self, user: &UserId, url: &str, event_id: &str, body: &[u8]) -> Result<(), HandlerError> {
        let url = url::Url::parse(url)
            .map_err(|e| HandlerError::permanent("notify_url", format!("the notify_url does not parse: {e}")))?;
        self.http.check(&url)?;
        let key = self.receiver_key(user).await?;
        let t = chrono::Utc::now().timestamp();
        let signed = signature(key.as_bytes(), t, body)
            .ok_or_else(|| HandlerError::transient("secret_unusable", "the notification key cannot sign"))?;
        let what = format!("notify_url {}", url.host_str().unwrap_or("?"));
        let response = self
            .http
            .client_without_redirects()
            .post(url)
            .timeout(std::time::Duration::from_secs(DELIVERY_TIMEOUT_SECS))
            .header("content-type", "application/json")
            .header("actiongate-signature", signed)
            .header("idempotency-key", event_id)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| HandlerError::from_reqwest(&e.without_url(), &what))?;
        let status = response.status().as_u16();
        let retry_after = super::retry_after_secs(&response);
        if (200..300).contains(&status) {
            return Ok(());
        }
        // The answer's body is not kept: shown back through the API it would let anyone read
        // what an allowlisted internal address says.
        drop(read_capped(response, MAX_ANSWER_BYTES, &what).await);
        Err(HandlerError::from_status(status, &what, "").retry_after(retry_after))
    }
}
