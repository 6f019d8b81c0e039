//! Who is calling: the identity the API's authorizer verified, and where a request came from
//! (recorded with the audit events it causes). Pure: the API Gateway adapter reads them off a
//! request.

use crate::domain::{Action, EmailAddress, UserId};
use serde_json::Value;

/// The authenticated caller, from the claims API Gateway's JWT authorizer verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub email: Option<String>,
    pub admin: bool,
}

impl Identity {
    /// The identity the verified claims (and the authorizer's scopes) establish.
    pub fn from_claims(claims: &std::collections::HashMap<String, String>, scopes: &[String]) -> Option<Self> {
        let user = UserId::parse(claims.get("sub")?)?;
        let admin = claims.get("scope").is_some_and(|s| scope_grants_admin(s))
            || ["groups", "cognito:groups"].iter().any(|k| claims.get(*k).is_some_and(|s| groups_grant_admin(s)))
            || scopes.iter().any(|s| s == "admin");
        // An address the identity provider has not verified proves nothing about its owner.
        let verified = claims.get("email_verified").is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"));
        let email = claims
            .get("email")
            .cloned()
            .filter(|_| verified)
            .or_else(|| user.as_str().contains('@').then(|| user.as_str().to_owned()));
        Some(Self { user, email, admin })
    }

    /// Whether this caller asked for `action`: its owner by user id, or by (verified) email
    /// when the owner's id is an address. A requester never decides their own action.
    pub fn is_requester(&self, action: &Action) -> bool {
        action.user_id == self.user
            || self.email.as_deref().is_some_and(|e| is_same_mailbox(e, action.user_id.as_str()))
            || action
                .requester_email
                .as_deref()
                .is_some_and(|r| self.email.as_deref().is_some_and(|e| is_same_mailbox(e, r)))
    }

    /// Whether `address` is this caller's own (their user id or verified email, same mailbox).
    pub fn owns_address(&self, address: &str) -> bool {
        is_same_mailbox(address, self.user.as_str())
            || self.email.as_deref().is_some_and(|e| is_same_mailbox(address, e))
    }

    /// Whether this caller may see `action`: its owner, an administrator, or one of the people
    /// asked to decide it.
    pub fn may_see(&self, action: &Action) -> bool {
        action.user_id == self.user || self.admin || action.pool().into_iter().any(|a| self.is_approver(Some(a)))
    }

    /// Whether this caller is the given approver (matched on the email claim).
    pub fn is_approver(&self, approver: Option<&EmailAddress>) -> bool {
        match (approver, &self.email) {
            (Some(a), Some(email)) => is_same_mailbox(a.as_str(), email),
            _ => false,
        }
    }
}

pub use crate::domain::ids::is_same_mailbox;

/// OAuth scopes are space-separated tokens (RFC 6749 §3.3: a scope never contains a space).
fn scope_grants_admin(scope: &str) -> bool {
    scope.split_ascii_whitespace().any(|t| t == "admin")
}

/// Group claims arrive as a JSON array, a comma-separated list (optionally in brackets) or one
/// name. Only a whole group value "admin" grants admin: a group named "help desk admin" does
/// not, and a space never separates groups (a name may contain one).
fn groups_grant_admin(groups: &str) -> bool {
    if let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<Value>(groups) {
        return items.iter().any(|g| g.as_str() == Some("admin"));
    }
    let inner = groups.trim();
    let inner = inner.strip_prefix('[').and_then(|g| g.strip_suffix(']')).unwrap_or(inner);
    inner.split(',').any(|g| g.trim().trim_matches('"') == "admin")
}

/// Who asked, from where: recorded with every audit event a request causes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_group_whose_name_contains_admin_does_not_grant_admin() {
        for groups in
            ["help desk admin", "[help desk admin]", "[\"help desk admin\"]", "administrators", "[sysadmin, users]"]
        {
            let id = Identity::from_claims(&claims(&[("sub", "u"), ("groups", groups)]), &[]).unwrap();
            assert!(!id.admin, "{groups}");
        }
        for groups in ["admin", "[admin]", "[users, admin]", "[\"users\",\"admin\"]", "users,admin"] {
            let id = Identity::from_claims(&claims(&[("sub", "u"), ("cognito:groups", groups)]), &[]).unwrap();
            assert!(id.admin, "{groups}");
        }
        assert!(Identity::from_claims(&claims(&[("sub", "u"), ("scope", "openid admin")]), &[]).unwrap().admin);
        assert!(!Identity::from_claims(&claims(&[("sub", "u"), ("scope", "openid admins")]), &[]).unwrap().admin);
        assert!(Identity::from_claims(&claims(&[("sub", "u")]), &["admin".into()]).unwrap().admin);
    }

    #[test]
    fn a_plus_alias_is_the_same_mailbox() {
        assert!(is_same_mailbox("Alice+approve@Example.com", "alice@example.com"));
        assert!(!is_same_mailbox("alice@example.com", "alicia@example.com"));
    }

    #[test]
    fn an_unverified_email_claim_is_ignored() {
        let unverified = claims(&[("sub", "u1"), ("email", "boss@example.com"), ("email_verified", "false")]);
        assert_eq!(Identity::from_claims(&unverified, &[]).unwrap().email, None);
        let verified = claims(&[("sub", "u1"), ("email", "boss@example.com"), ("email_verified", "true")]);
        assert_eq!(Identity::from_claims(&verified, &[]).unwrap().email.as_deref(), Some("boss@example.com"));
        let unstated = claims(&[("sub", "u1"), ("email", "boss@example.com")]);
        assert_eq!(Identity::from_claims(&unstated, &[]).unwrap().email.as_deref(), Some("boss@example.com"));
    }
}
