//! The queue, mail and scheduler in memory: each keeps what was sent so a test can read it,
//! deliver it (the queue at least once: a message can be delivered again) or make it fail.

use crate::ports::mail::{Mail, MailError, MailFailure, Mailer};
use crate::ports::queue::{ExecuteMessage, QueueError, WorkQueue};
use crate::ports::scheduler::{SchedulerError, WakeUps};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A work queue whose messages wait until a test takes them.
#[derive(Clone, Default)]
pub struct MemoryQueue {
    messages: Arc<Mutex<VecDeque<(ExecuteMessage, u32)>>>,
    fail: Arc<Mutex<bool>>,
}

impl MemoryQueue {
    /// Every waiting message with its delay, oldest first, taken off the queue.
    pub fn take(&self) -> Vec<(ExecuteMessage, u32)> {
        lock(&self.messages).drain(..).collect()
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        lock(&self.messages).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// From now on, sends fail (`true`) or succeed again (`false`).
    pub fn fail_sends(&self, fail: bool) {
        *lock(&self.fail) = fail;
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    async fn enqueue(&self, message: &ExecuteMessage, delay_secs: u32) -> Result<String, QueueError> {
        if *lock(&self.fail) {
            return Err(QueueError("the queue refused the message (test)".into()));
        }
        let mut messages = lock(&self.messages);
        messages.push_back((message.clone(), delay_secs.min(900)));
        Ok(format!("m-{}", messages.len()))
    }
}

/// One mail the memory mailer accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub from: String,
    pub mail: Mail,
}

/// A mailer that keeps what it sends, or fails as told.
#[derive(Clone)]
pub struct MemoryMailer {
    sender: String,
    sent: Arc<Mutex<Vec<Sent>>>,
    failure: Arc<Mutex<Option<MailFailure>>>,
    failing_to: Arc<Mutex<Vec<String>>>,
}

impl MemoryMailer {
    pub fn new(sender: impl Into<String>) -> Self {
        Self { sender: sender.into(), sent: Arc::default(), failure: Arc::default(), failing_to: Arc::default() }
    }

    /// From now on, sends to any of `addresses` fail (transiently); empty: none do.
    pub fn fail_to(&self, addresses: &[&str]) {
        *lock(&self.failing_to) = addresses.iter().map(|a| a.to_ascii_lowercase()).collect();
    }

    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.sent).clone()
    }

    /// From now on, every send fails this way (`None`: sends succeed again).
    pub fn fail_with(&self, failure: Option<MailFailure>) {
        *lock(&self.failure) = failure;
    }
}

#[async_trait]
impl Mailer for MemoryMailer {
    fn sender(&self) -> &str {
        &self.sender
    }

    async fn send(&self, mail: &Mail) -> Result<String, MailError> {
        if let Some(failure) = *lock(&self.failure) {
            return Err(MailError::new(failure, "the mailer refused the message (test)"));
        }
        if mail.to.iter().any(|t| lock(&self.failing_to).contains(&t.to_ascii_lowercase())) {
            return Err(MailError::new(MailFailure::NotSentTransient, "the recipient's server is down (test)"));
        }
        let mut sent = lock(&self.sent);
        sent.push(Sent { from: self.sender.clone(), mail: mail.clone() });
        Ok(format!("mail-{}", sent.len()))
    }
}

/// One scheduled wake-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeUp {
    pub at: DateTime<Utc>,
    pub message: ExecuteMessage,
}

/// Wake-ups by name; creating one twice changes nothing, as with the real scheduler.
#[derive(Clone, Default)]
pub struct MemoryWakeUps {
    schedules: Arc<Mutex<BTreeMap<String, WakeUp>>>,
}

impl MemoryWakeUps {
    /// The wake-ups due at `now`, removed (they delete themselves after firing).
    pub fn fire(&self, now: DateTime<Utc>) -> Vec<ExecuteMessage> {
        let mut schedules = lock(&self.schedules);
        let due: Vec<String> = schedules.iter().filter(|(_, w)| w.at <= now).map(|(n, _)| n.clone()).collect();
        due.into_iter().filter_map(|name| schedules.remove(&name)).map(|w| w.message).collect()
    }

    pub fn pending(&self) -> Vec<(String, WakeUp)> {
        lock(&self.schedules).iter().map(|(n, w)| (n.clone(), w.clone())).collect()
    }
}

#[async_trait]
impl WakeUps for MemoryWakeUps {
    async fn schedule(&self, name: &str, at: DateTime<Utc>, message: &ExecuteMessage) -> Result<(), SchedulerError> {
        if name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(SchedulerError(format!("invalid schedule name {name}")));
        }
        let at = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
        lock(&self.schedules).entry(name.to_owned()).or_insert(WakeUp { at, message: message.clone() });
        Ok(())
    }
}

/// A notification receiver in memory: it keeps every delivery (`url`, `event_id`, body) and
/// answers each with the next scripted failure, or success when none is left.
#[derive(Clone, Default)]
pub struct MemoryDeliverer {
    received: Arc<Mutex<Vec<(String, String, serde_json::Value)>>>,
    script: Arc<Mutex<VecDeque<crate::ports::handler::HandlerError>>>,
}

impl MemoryDeliverer {
    /// Every delivery attempt so far: (url, event_id, body).
    pub fn received(&self) -> Vec<(String, String, serde_json::Value)> {
        lock(&self.received).clone()
    }

    /// The next deliveries fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = crate::ports::handler::HandlerError>) {
        lock(&self.script).extend(errors);
    }
}

#[async_trait]
impl crate::ports::notify::Deliverer for MemoryDeliverer {
    async fn receiver_key(&self, user: &crate::domain::UserId) -> Result<String, crate::ports::handler::HandlerError> {
        crate::domain::notify::receiver_key(b"memory-master-key", user)
            .ok_or_else(|| crate::ports::handler::HandlerError::transient("secret_unusable", "the key cannot sign"))
    }

    async fn deliver(
        &self,
        _user: &crate::domain::UserId,
        url: &str,
        event_id: &str,
        body: &[u8],
    ) -> Result<(), crate::ports::handler::HandlerError> {
        let body = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
        lock(&self.received).push((url.to_owned(), event_id.to_owned(), body));
        match lock(&self.script).pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
