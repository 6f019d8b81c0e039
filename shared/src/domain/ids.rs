//! Parsed newtypes: once one of these exists, its value is valid.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// An action id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionId(Uuid);

impl ActionId {
    pub fn new_v7(at: chrono::DateTime<chrono::Utc>) -> Self {
        let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, millis / 1000, ((millis % 1000) * 1_000_000) as u32);
        Self(Uuid::new_v7(ts))
    }

    /// Accepts only the canonical hyphenated lower-case form the API hands out.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 36 {
            return None;
        }
        let id = Uuid::parse_str(s).ok()?;
        (id.hyphenated().to_string() == s).then_some(Self(id))
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The authenticated caller's id (the JWT `sub` claim).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// 1–128 printable characters, no `#` (it separates key parts in the table).
    pub fn parse(s: &str) -> Option<Self> {
        let ok =
            !s.is_empty() && s.len() <= 128 && s.chars().all(|c| !c.is_control() && !c.is_whitespace() && c != '#');
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, checked for the shape mail systems accept; stored lower-cased in the
/// domain part so comparisons of approvers are stable.
/// Deserializing does not check the shape (stored documents stay readable); a policy's new
/// address fields are checked by `Policy::check`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.len() > 254 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return None;
        }
        let (local, domain) = s.rsplit_once('@')?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        (local_ok && domain_ok).then(|| Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Case-insensitive comparison, as mailbox owners expect.
    pub fn matches(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other.trim())
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether two addresses reach the same mailbox: case-insensitively, and with a `+tag`
/// sub-address ignored (`me+x@corp` is `me@corp`), so a requester cannot name themselves
/// under an alias.
pub fn is_same_mailbox(a: &str, b: &str) -> bool {
    fn base(s: &str) -> String {
        let s = s.trim().to_ascii_lowercase();
        match s.rsplit_once('@') {
            Some((local, domain)) => format!("{}@{domain}", local.split('+').next().unwrap_or(local)),
            None => s,
        }
    }
    base(a) == base(b)
}

/// A client-supplied `Idempotency-Key` header value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_graphic());
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ids_round_trip_and_sort_by_time() {
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let a = ActionId::new_v7(t0);
        let b = ActionId::new_v7(t0 + chrono::Duration::seconds(1));
        assert!(a < b);
        assert_eq!(ActionId::parse(&a.to_string()), Some(a));
        assert!(b.to_string() > a.to_string());
    }

    #[test]
    fn action_id_rejects_non_canonical_forms() {
        assert!(ActionId::parse("not-an-id").is_none());
        assert!(ActionId::parse("").is_none());
        let id = ActionId::new_v7(chrono::Utc::now()).to_string();
        assert!(ActionId::parse(&id.to_uppercase()).is_none());
        assert!(ActionId::parse(&id.replace('-', "")).is_none());
    }

    #[test]
    fn user_ids_refuse_separators_and_blank() {
        assert!(UserId::parse("alice").is_some());
        assert!(UserId::parse("alice@example.com").is_some());
        assert!(UserId::parse("").is_none());
        assert!(UserId::parse("a#b").is_none());
        assert!(UserId::parse("a b").is_none());
        assert!(UserId::parse(&"x".repeat(129)).is_none());
    }

    #[test]
    fn email_addresses_are_checked_and_domain_lowercased() {
        assert_eq!(EmailAddress::parse("Bob@Example.COM").unwrap().as_str(), "Bob@example.com");
        for bad in [
            "",
            "bob",
            "bob@",
            "@example.com",
            "bob@example",
            "bo b@example.com",
            "bob@exa_mple.com",
            "a..b@example.com",
            "bob@-example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_none(), "{bad} accepted");
        }
        assert!(EmailAddress::parse("bob@example.com").unwrap().matches("BOB@example.com"));
    }

    #[test]
    fn idempotency_keys_are_printable_and_bounded() {
        assert!(IdempotencyKey::parse("order-42").is_some());
        assert!(IdempotencyKey::parse("").is_none());
        assert!(IdempotencyKey::parse("with space").is_none());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_none());
    }
}
