//! Secrets in memory.

use crate::ports::handler::Secret;
use crate::ports::secrets::{SecretError, Secrets};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Named secrets a test sets.
#[derive(Clone, Default)]
pub struct MemorySecrets {
    values: Arc<Mutex<BTreeMap<String, String>>>,
}

impl MemorySecrets {
    pub fn set(&self, name: &str, value: &str) {
        self.values.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), value.to_owned());
    }
}

#[async_trait]
impl Secrets for MemorySecrets {
    async fn secret(&self, name: &str) -> Result<Secret, SecretError> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.get(name).map(Secret::new).ok_or_else(|| SecretError::Missing(name.to_owned()))
    }
}
