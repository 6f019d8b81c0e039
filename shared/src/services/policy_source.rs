//! The effective policy: an administrator's override stored in DynamoDB (`PUT /admin/policy`),
//! else the policy deployed with the stack. Each function keeps it for a short while, so a
//! change reaches every function within `POLICY_CACHE_SECS`.

use crate::policy::Policy;
use crate::ports::handler::PolicyReader;
use crate::ports::store::AdminStore;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PolicySource {
    store: Option<Arc<dyn AdminStore>>,
    deployed: Arc<Policy>,
    ttl: Duration,
    cache: Mutex<Option<(Instant, Arc<Policy>)>>,
}

impl PolicySource {
    pub fn new(store: Arc<dyn AdminStore>, deployed: Policy, ttl: Duration) -> Self {
        Self { store: Some(store), deployed: Arc::new(deployed), ttl, cache: Mutex::new(None) }
    }

    /// Always this policy (tests, tools).
    pub fn fixed(policy: Policy) -> Self {
        Self { store: None, deployed: Arc::new(policy), ttl: Duration::MAX, cache: Mutex::new(None) }
    }

    pub fn deployed(&self) -> &Policy {
        &self.deployed
    }

    pub async fn current(&self) -> Arc<Policy> {
        let Some(store) = &self.store else { return Arc::clone(&self.deployed) };
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((at, policy)) = &cached {
            if at.elapsed() < self.ttl {
                return Arc::clone(policy);
            }
        }
        let fresh = match store.policy_override_raw().await {
            Ok(Some(raw)) => match raw.parse() {
                Ok(policy) => Arc::new(policy),
                Err(problem) => {
                    // Never back to the deployed policy (it would drop the admin's kill switch
                    // and blocks): nothing runs automatically until an admin replaces it.
                    tracing::error!(error = %problem, version = raw.version, "the stored policy override is unreadable; automatic execution is stopped until an administrator replaces it (PUT /admin/policy)");
                    crate::telemetry::policy_unreadable_metric(chrono::Utc::now());
                    Arc::new(self.deployed.fail_safe())
                }
            },
            Ok(None) => Arc::clone(&self.deployed),
            Err(e) => {
                // Keep what we had; with nothing read yet, fail safe (the stored override may
                // hold the kill switch or blocks): no automatic execution until it is read.
                tracing::error!(error = %e, "reading the policy override failed");
                return cached.map_or_else(|| Arc::new(self.deployed.fail_safe()), |(_, p)| p);
            }
        };
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), Arc::clone(&fresh)));
        fresh
    }
}

#[async_trait::async_trait]
impl PolicyReader for PolicySource {
    async fn current(&self) -> Arc<Policy> {
        PolicySource::current(self).await
    }
}
