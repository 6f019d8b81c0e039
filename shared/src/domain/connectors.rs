//! Connectors: the integrator's own HTTPS endpoints that run the action types a policy
//! declares. `[connectors.<name>]` gives the `url`, the `secret` that signs every call (the name
//! or ARN of an AWS Secrets Manager secret under `actiongate/`), a `timeout` and the `phases` it
//! serves. A declared type names its connector (`connector = "<name>"`).

use crate::domain::IsoDuration;
use serde::{Deserialize, Serialize};

/// Where every connector secret lives, so the functions' permission covers exactly these.
pub const SECRET_PREFIX: &str = "actiongate/";
/// The longest a connector call may take: within an executor invocation's budget, and within
/// the bound the rollback service puts on one undo (20 seconds).
pub const MAX_TIMEOUT_SECS: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Execute,
    Rollback,
    Preview,
    Validate,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Execute => "execute",
            Phase::Rollback => "rollback",
            Phase::Preview => "preview",
            Phase::Validate => "validate",
        }
    }
}

fn default_timeout() -> IsoDuration {
    IsoDuration::from_secs(10)
}

fn default_phases() -> Vec<Phase> {
    vec![Phase::Execute]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    /// HTTPS; plain HTTP only to a loopback or private address, which the address guard still
    /// refuses unless the deployment allowlists it (`WEBHOOK_ALLOWLIST`).
    pub url: String,
    /// The Secrets Manager secret (name or ARN, under `actiongate/`) holding the signing key.
    pub secret: String,
    #[serde(default = "default_timeout")]
    pub timeout: IsoDuration,
    #[serde(default = "default_phases")]
    pub phases: Vec<Phase>,
}

impl Connector {
    pub fn serves(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    /// What a policy may not say about a connector, in a sentence naming the field.
    pub fn check(&self, name: &str) -> Result<(), String> {
        let at = |field: &str, why: &str| Err(format!("connectors.{name}.{field}: {why}"));
        if !crate::domain::custom_types::valid_name(name) {
            return Err(format!("connectors.{name}: a connector's name is 1 to 64 of A-Z a-z 0-9 _ . : -"));
        }
        let Ok(url) = url::Url::parse(&self.url) else { return at("url", "is not an absolute URL") };
        let local = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => return at("url", "needs a host"),
        };
        match url.scheme() {
            "https" => {}
            "http" if local => {}
            _ => return at("url", "must be https (http only to a loopback or private address)"),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return at("url", "must not carry credentials: calls are signed with the secret");
        }
        let under_prefix = self.secret.starts_with(SECRET_PREFIX)
            || (self.secret.starts_with("arn:") && self.secret.contains(&format!(":secret:{SECRET_PREFIX}")));
        if !under_prefix || self.secret.len() > 512 {
            return at("secret", "must name a Secrets Manager secret under actiongate/ (a name or an ARN)");
        }
        let secs = self.timeout.as_secs();
        if secs == 0 || secs > MAX_TIMEOUT_SECS {
            return at("timeout", &format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds"));
        }
        let mut phases = self.phases.clone();
        phases.sort();
        phases.dedup();
        if phases.len() != self.phases.len() {
            return at("phases", "names a phase twice");
        }
        if !self.serves(Phase::Execute) {
            return at("phases", "must include execute");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(url: &str, secret: &str) -> Connector {
        Connector {
            url: url.into(),
            secret: secret.into(),
            timeout: default_timeout(),
            phases: vec![Phase::Execute, Phase::Rollback],
        }
    }

    #[test]
    fn urls_secrets_timeouts_and_phases_are_checked() {
        assert!(connector("https://hooks.example.com/actiongate", "actiongate/shop").check("shop").is_ok());
        assert!(connector("http://127.0.0.1:9000/c", "actiongate/local").check("local").is_ok());
        assert!(connector("http://10.0.0.5/c", "arn:aws:secretsmanager:eu-west-1:1:secret:actiongate/x-AbC")
            .check("a")
            .is_ok());
        let refused = |c: Connector| c.check("c").unwrap_err();
        assert!(refused(connector("http://hooks.example.com/c", "actiongate/x")).contains("url"));
        assert!(refused(connector("https://u:p@hooks.example.com/c", "actiongate/x")).contains("credentials"));
        assert!(refused(connector("ftp://hooks.example.com/c", "actiongate/x")).contains("url"));
        assert!(refused(connector("https://hooks.example.com/c", "prod/db-password")).contains("secret"));
        let mut slow = connector("https://hooks.example.com/c", "actiongate/x");
        slow.timeout = IsoDuration::parse("PT60S").unwrap();
        assert!(refused(slow).contains("timeout"));
        let mut no_execute = connector("https://hooks.example.com/c", "actiongate/x");
        no_execute.phases = vec![Phase::Rollback];
        assert!(refused(no_execute).contains("execute"));
        let mut twice = connector("https://hooks.example.com/c", "actiongate/x");
        twice.phases.push(Phase::Execute);
        assert!(refused(twice).contains("twice"));
        let mut at_limit = connector("https://hooks.example.com/c", "actiongate/x");
        at_limit.timeout = IsoDuration::parse("PT21S").unwrap();
        assert!(refused(at_limit).contains("timeout"), "within one undo's bound");
        let mut all = connector("https://hooks.example.com/c", "actiongate/x");
        all.phases.extend([Phase::Preview, Phase::Validate]);
        assert!(all.check("c").is_ok());
    }
}
