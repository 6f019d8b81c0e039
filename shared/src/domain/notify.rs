//! Status notifications: an action created with a `notify_url` has every decision and end state
//! (`queued` after approval, `rejected`, `expired`, `cancelled`, `completed`, `failed`,
//! `rolled_back`, `rollback_failed`, `done_manually`, `dismissed`, `blocked`) posted there.
//!
//! A notification is recorded in the same write as the move it reports (an outbox: a move is
//! never reported without happening, and never happens without its report), then delivered by
//! an executor, signed, and retried with backoff; a delivery never blocks or fails the action.
//! Each delivery is claimed with a conditional write that counts the attempt and leases it, so
//! two executors never post the same attempt, and one that crashed is taken over when the lease
//! ends. Receivers deduplicate on `event_id` (delivery is at least once).

use crate::domain::{Action, ActionId, AuditEvent, Status, UserId};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The `event` of every notification body.
pub const STATUS_CHANGED: &str = "action.status_changed";
/// Deliveries tried before a notification is given up.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 12;
/// How long a claimed delivery belongs to its executor; after that the sweep hands it on.
pub const DELIVERY_LEASE_SECS: i64 = 60;
/// The receiver's time to answer.
pub const DELIVERY_TIMEOUT_SECS: u64 = 10;
/// A `notify_url`'s longest length.
pub const MAX_NOTIFY_URL_CHARS: usize = 2048;
/// How long delivered or abandoned notifications are kept (their item's TTL).
pub const NOTIFICATION_RETENTION_DAYS: i64 = 30;
/// The longest pause between two attempts.
const MAX_BACKOFF_SECS: i64 = 3600;
/// A reason longer than this is cut (it comes from audit events, which may quote a human).
const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet: due at `next_attempt_at` (or leased until then).
    Pending,
    Delivered,
    /// Refused for good by the receiver or the address guard, or out of attempts.
    GaveUp,
}

/// One notification and how its delivery stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub action_id: ActionId,
    /// The action version whose move it reports (unique per action).
    pub version: u64,
    pub user_id: UserId,
    pub url: String,
    pub from: Status,
    pub to: Status,
    pub at: DateTime<Utc>,
    pub reason: String,
    pub state: DeliveryState,
    /// Attempts started so far (a claim counts one).
    pub attempts: u32,
    /// When the next attempt is due, or when the current attempt's lease ends.
    pub next_attempt_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Whether a move from `from` to `to` is one a requester is told of.
pub fn reported(from: Status, to: Status) -> bool {
    use Status::*;
    if from == to {
        return false;
    }
    match to {
        Queued => matches!(from, AwaitingApproval | Approved),
        Rejected | Expired | Cancelled | Completed | Failed | RolledBack | RollbackFailed | DoneManually
        | Dismissed | Blocked => true,
        _ => false,
    }
}

/// The notification a write moving `before` to `after` (with `events`) records, if any.
pub fn recorded_by(before: &Action, after: &Action, events: &[AuditEvent]) -> Option<Notification> {
    let url = after.notify_url.as_ref()?;
    if !reported(before.status, after.status) {
        return None;
    }
    let reason = events.iter().rev().find(|e| e.to == after.status).or(events.last()).map(|e| e.reason.clone());
    let reason: String = reason.unwrap_or_default().chars().take(MAX_REASON_CHARS).collect();
    Some(Notification {
        action_id: after.action_id,
        version: after.version,
        user_id: after.user_id.clone(),
        url: url.clone(),
        from: before.status,
        to: after.status,
        at: after.updated_at,
        reason,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: after.updated_at,
        last_error: None,
        delivered_at: None,
    })
}

impl Notification {
    /// The id receivers deduplicate on: the same for every attempt of this notification.
    pub fn event_id(&self) -> String {
        format!("{}:{}", self.action_id, self.version)
    }

    /// How the API shows it.
    pub fn to_api(&self) -> Value {
        let mut v = self.body();
        v["state"] = json!(self.state);
        v["attempts"] = json!(self.attempts);
        if self.state == DeliveryState::Pending {
            v["next_attempt_at"] = json!(crate::domain::time::format_time(self.next_attempt_at));
        }
        if let Some(e) = &self.last_error {
            v["last_error"] = json!(e);
        }
        if let Some(t) = self.delivered_at {
            v["delivered_at"] = json!(crate::domain::time::format_time(t));
        }
        v
    }

    /// The body posted to the receiver.
    pub fn body(&self) -> Value {
        json!({
            "event": STATUS_CHANGED,
            "event_id": self.event_id(),
            "action_id": self.action_id,
            "from": self.from,
            "to": self.to,
            "at": crate::domain::time::format_time(self.at),
            "reason": self.reason,
        })
    }

    /// This notification claimed for one more attempt at `now`: counted, and leased.
    pub fn claimed(&self, now: DateTime<Utc>) -> Option<Notification> {
        if self.state != DeliveryState::Pending || self.attempts >= MAX_DELIVERY_ATTEMPTS {
            return None;
        }
        let mut next = self.clone();
        next.attempts += 1;
        next.next_attempt_at = now + Duration::seconds(DELIVERY_LEASE_SECS);
        Some(next)
    }

    /// After a claimed attempt: delivered.
    pub fn delivered(&self, now: DateTime<Utc>) -> Notification {
        let mut next = self.clone();
        next.state = DeliveryState::Delivered;
        next.delivered_at = Some(now);
        next.last_error = None;
        next
    }

    /// After a claimed attempt that failed: due again after `pause` seconds, or given up when the
    /// failure is permanent or the attempts are spent.
    pub fn failed(&self, now: DateTime<Utc>, error: String, permanent: bool, pause: i64) -> Notification {
        let mut next = self.clone();
        next.last_error = Some(error.chars().take(MAX_REASON_CHARS).collect());
        if permanent || self.attempts >= MAX_DELIVERY_ATTEMPTS {
            next.state = DeliveryState::GaveUp;
        } else {
            next.next_attempt_at = now + Duration::seconds(pause.clamp(1, MAX_BACKOFF_SECS));
        }
        next
    }

    /// Given up because the last attempt's executor never reported (its lease ran out).
    pub fn abandoned(&self) -> Notification {
        let mut next = self.clone();
        next.state = DeliveryState::GaveUp;
        next.last_error = Some("lease_expired: the last attempt never reported".into());
        next
    }

    /// Whether the sweep should hand it to an executor now (due, or its lease ran out).
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        self.state == DeliveryState::Pending && self.next_attempt_at <= now
    }

    /// The audit event of an attempt's end, on the action's notification stream.
    pub fn attempt_event(&self) -> Value {
        json!({
            "actor": "system:notifier",
            "event_id": self.event_id(),
            "attempt": self.attempts,
            "state": self.state,
            "to": self.to,
            "error": self.last_error,
        })
    }

    /// Its sequence on the stream: one per (version, attempt).
    pub fn attempt_seq(&self) -> u64 {
        self.version.saturating_mul(100).saturating_add(u64::from(self.attempts))
    }
}

/// The pause after `failed` failed attempts (0 after the first): equal jitter over an
/// exponential ceiling (10 s, 20 s, … up to an hour), so 12 attempts span about two and a half
/// hours; never below a second; `jitter` in `[0, 1)`. A receiver's `Retry-After` is honoured
/// (within the hour).
pub fn backoff_secs(failed: u32, jitter: f64, retry_after: Option<u64>) -> i64 {
    let ceiling = (10i64 << failed.min(12)).min(MAX_BACKOFF_SECS);
    let pause = ceiling / 2 + ((ceiling / 2) as f64 * jitter.clamp(0.0, 1.0)) as i64;
    let pause = pause.max(1);
    match retry_after {
        Some(secs) => pause.max(i64::try_from(secs).unwrap_or(MAX_BACKOFF_SECS).min(MAX_BACKOFF_SECS)),
        None => pause,
    }
}

/// The key a receiver checks `user`'s notifications with: HMAC-SHA256 of the stack's master key
/// over a purpose-bound label and the user id, in hex. Each user gets their own (from
/// `GET /notifications/key`), so one user's receiver cannot forge another's notifications, and
/// the label keeps these signatures apart from any other use of the master key.
/// `None` only if the HMAC implementation refused the key (HMAC takes keys of any length).
pub fn receiver_key(master: &[u8], user: &UserId) -> Option<String> {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(master).ok()?;
    mac.update(b"actiongate-notify-v1:");
    mac.update(user.as_str().as_bytes());
    Some(crate::domain::token::hex(&mac.finalize().into_bytes()))
}

/// The audit stream of an action's notification deliveries (kept apart from the action's own
/// trail, whose sequence is the action's version).
pub fn notification_stream(id: ActionId) -> String {
    format!("notify#{id}")
}

/// Checks a `notify_url` without DNS: `https` (plain `http` only to a literal loopback or private
/// address, which the deployment must also allowlist), a host, no credentials, no fragment.
pub fn check_notify_url(raw: &str) -> Result<url::Url, String> {
    if raw.chars().count() > MAX_NOTIFY_URL_CHARS {
        return Err(format!("must be at most {MAX_NOTIFY_URL_CHARS} characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (the signature authenticates us)".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    let private_literal = match url.host() {
        None => return Err("must name a host".into()),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(_)) => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if private_literal => Ok(url),
        "http" => Err("must be https".into()),
        other => Err(format!("must be https, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_ends_are_reported_and_nothing_else() {
        assert!(reported(Status::AwaitingApproval, Status::Queued));
        assert!(reported(Status::Approved, Status::Queued));
        assert!(!reported(Status::Pending, Status::Queued));
        assert!(!reported(Status::Executing, Status::Queued));
        assert!(!reported(Status::Queued, Status::Executing));
        assert!(!reported(Status::Completed, Status::Completed));
        for to in [Status::Rejected, Status::Expired, Status::Completed, Status::Failed, Status::RolledBack] {
            assert!(reported(Status::Executing, to), "{to}");
        }
        assert!(reported(Status::RollingBack, Status::RollbackFailed));
    }

    #[test]
    fn a_claim_counts_and_leases_and_attempts_run_out() {
        let now = Utc::now();
        let mut n = Notification {
            action_id: ActionId::new_v7(now),
            version: 3,
            user_id: UserId::parse("u1").unwrap(),
            url: "https://example.com/hook".into(),
            from: Status::AwaitingApproval,
            to: Status::Queued,
            at: now,
            reason: "approved".into(),
            state: DeliveryState::Pending,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            delivered_at: None,
        };
        assert!(n.due(now));
        let claimed = n.claimed(now).unwrap();
        assert_eq!(claimed.attempts, 1);
        assert!(!claimed.due(now));
        assert!(claimed.due(now + Duration::seconds(DELIVERY_LEASE_SECS)));
        let retry = claimed.failed(now, "503".into(), false, 20);
        assert_eq!(retry.state, DeliveryState::Pending);
        assert_eq!(retry.next_attempt_at, now + Duration::seconds(20));
        assert_eq!(claimed.failed(now, "410".into(), true, 20).state, DeliveryState::GaveUp);
        n.attempts = MAX_DELIVERY_ATTEMPTS;
        assert!(n.claimed(now).is_none());
        n.attempts = MAX_DELIVERY_ATTEMPTS - 1;
        let last = n.claimed(now).unwrap();
        assert_eq!(last.failed(now, "503".into(), false, 20).state, DeliveryState::GaveUp);
        assert_eq!(last.delivered(now).state, DeliveryState::Delivered);
        assert_ne!(n.attempt_seq(), last.attempt_seq());
    }

    #[test]
    fn backoff_grows_is_bounded_and_honours_retry_after() {
        assert_eq!(backoff_secs(0, 0.0, None), 5);
        assert_eq!(backoff_secs(0, 0.999, None), 9);
        assert_eq!(backoff_secs(3, 0.0, None), 40);
        assert_eq!(backoff_secs(40, 0.999, None), 3598);
        assert_eq!(backoff_secs(1, 0.0, Some(120)), 120);
        let span: i64 = (0..MAX_DELIVERY_ATTEMPTS - 1).map(|n| backoff_secs(n, 0.0, None)).sum();
        assert!(span > 3600, "the attempts span more than an hour at the least: {span}");
        assert_eq!(backoff_secs(1, 0.0, Some(u64::MAX)), 3600);
    }

    #[test]
    fn each_user_has_their_own_receiver_key() {
        let alice = receiver_key(b"master", &UserId::parse("alice").unwrap()).unwrap();
        assert_eq!(alice.len(), 64);
        assert_eq!(alice, receiver_key(b"master", &UserId::parse("alice").unwrap()).unwrap());
        assert_ne!(alice, receiver_key(b"master", &UserId::parse("bob").unwrap()).unwrap());
        assert_ne!(alice, receiver_key(b"other", &UserId::parse("alice").unwrap()).unwrap());
    }

    #[test]
    fn notify_urls_are_https_without_credentials() {
        assert!(check_notify_url("https://hooks.example.com/a?b=c").is_ok());
        assert!(check_notify_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_notify_url("http://10.0.0.5/hook").is_ok());
        assert!(check_notify_url("http://hooks.example.com/a").is_err());
        assert!(check_notify_url("https://user:pw@hooks.example.com/").is_err());
        assert!(check_notify_url("https://hooks.example.com/#x").is_err());
        assert!(check_notify_url("ftp://hooks.example.com/").is_err());
        assert!(check_notify_url("not a url").is_err());
        assert!(check_notify_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }
}
