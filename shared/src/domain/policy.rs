//! The declarative policy: which tier an action lands in, and every rule that put it there.
//!
//! The policy is data (`infra/policy.toml`), parsed and checked whole by [`Policy::parse`];
//! [`Policy::evaluate`] is a pure function of the policy, the request and the caller, so it is
//! the same for real requests and dry runs.

use crate::domain::validation::BUILTIN_ACTION_TYPES;
use crate::domain::{EmailAddress, IsoDuration, Tier};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The policy shipped with the stack, embedded as the fallback when no file is configured.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../infra/policy.toml");

/// [`DEFAULT_POLICY_TOML`] as JSON, converted by the build script (cheaper to read at start).
const DEFAULT_POLICY_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/policy.json"));

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub defaults: Defaults,
    pub auto_execution: AutoExecution,
    pub types: BTreeMap<String, TypeRule>,
    /// The integrator's endpoints that run declared types (`[connectors.<name>]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connectors: BTreeMap<String, crate::domain::connectors::Connector>,
    /// Per-integration circuit breakers' thresholds: `[integrations.default]` and
    /// `[integrations."<name>"]` (`gmail`, `webhook:<host>`, `connector:<name>`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub integrations: crate::domain::integrations::IntegrationPolicy,
    /// Named sets of approvers (`group:<name>` in a type's `approvers` or a request's `approver`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approver_groups: crate::domain::approvers::Groups,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default = "default_min_confidence")]
    pub min_confidence: f64,
    #[serde(default = "default_expiry")]
    pub approval_expiry: IsoDuration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    pub approver: Option<EmailAddress>,
    /// Whom a request may name as its `approver` besides the policy's own approvers: addresses,
    /// or `@domain` for anyone at that domain. A requester is never allowed to approve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_approvers: Vec<String>,
    /// Exponential backoff with full jitter: attempt n waits up to `min(cap, base × 2^(n-1))`.
    #[serde(default = "default_retry_base")]
    pub retry_base: IsoDuration,
    #[serde(default = "default_retry_cap")]
    pub retry_cap: IsoDuration,
    /// Roll back a plan's completed steps when a later step fails for good.
    #[serde(default)]
    pub compensate_on_failure: bool,
    /// The recipient domains `gmail.forward` may send to (a domain allows its subdomains);
    /// empty: forwarding is refused at intake (`domain_not_allowed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_domains: Vec<String>,
    /// How long a human's rejection is remembered: the same request again (same user, type and
    /// payload) is refused with 409 `previously_rejected` meanwhile. `PT0S` forgets at once.
    #[serde(default = "default_rejection_memory")]
    pub rejection_memory: IsoDuration,
    /// When nobody decides in time, who else is asked (types without their own escalation):
    /// `escalate_after` and `escalate_to` for one level, or an `escalation` chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_to: Vec<crate::domain::approvers::ApproverRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<crate::domain::approvers::EscalationLevel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoExecution {
    /// The global kill switch for tier-1 execution.
    pub enabled: bool,
    /// Tier-1 executions started, for all users together.
    pub per_hour: u32,
    pub per_day: u32,
    /// Tier-1 executions started for one user (default: the global limits).
    pub per_user_per_hour: Option<u32>,
    pub per_user_per_day: Option<u32>,
    /// An entity (`rate_limit_key`) acted on automatically rests this long.
    pub cooldown: IsoDuration,
    #[serde(default)]
    pub breaker: crate::domain::breaker::BreakerSettings,
    /// Who is told when the breaker opens (default: `defaults.approver`).
    pub alert_email: Option<EmailAddress>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeRule {
    pub tier: Option<Tier>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub requires_approval: bool,
    #[serde(default)]
    pub requires_kyc: bool,
    #[serde(default)]
    pub risk_thresholds: Vec<RiskThreshold>,
    /// Rules on the payload's own values (an amount, a recipient count): above a limit the
    /// step needs a higher tier or more approvals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload_thresholds: Vec<crate::domain::payload_rules::PayloadThreshold>,
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    pub approval_expiry: Option<IsoDuration>,
    /// Who may approve: addresses and `group:<name>`. Everyone listed is asked (a link each).
    #[serde(default)]
    pub approvers: Vec<crate::domain::approvers::ApproverRef>,
    /// How many distinct people must approve (default 1); the requester never counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_required: Option<u32>,
    /// How many distinct people's rejections reject it (default 1: any rejection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_requires: Option<u32>,
    pub max_attempts: Option<u32>,
    #[serde(default = "yes")]
    pub reversible: bool,
    /// What the type does, for people and for agents (`GET /action-types`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A declared (not built-in) type's payload schema (JSON Schema 2020-12), inline in TOML
    /// or JSON; without one, any JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// The connector (`[connectors.<name>]`) that runs a declared type of tier 1 or 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// This type's `defaults.rejection_memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_memory: Option<IsoDuration>,
    /// Lets the requester approve their own action of this type (never by default: only a
    /// policy that says so explicitly, for every step of a plan).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_self_approval: bool,
    /// Approved work of this type tells the requester (when their id or verified email is an
    /// address) by mail when it completes or fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completion_mail: bool,
    /// Who else is told by mail when approved work of this type completes or fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::domain::approvers::ApproverRef>,
    /// This type's escalation (see `Defaults::escalation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_to: Vec<crate::domain::approvers::ApproverRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<crate::domain::approvers::EscalationLevel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskThreshold {
    pub above: u8,
    pub tier: Tier,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub window: Window,
    pub limit: u32,
}

/// A fixed rate-limit window, aligned to the UTC hour or day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    Hour,
    Day,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }

    /// Start and end of the window containing `at`.
    pub fn bounds(
        self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
        let secs = match self {
            Window::Hour => 3_600,
            Window::Day => 86_400,
        };
        let start_ts = at.timestamp().div_euclid(secs) * secs;
        let start = chrono::DateTime::from_timestamp(start_ts, 0).unwrap_or(at);
        (start, start + chrono::Duration::seconds(secs))
    }
}

fn default_min_confidence() -> f64 {
    0.7
}
fn default_expiry() -> IsoDuration {
    IsoDuration::from_secs(3_600)
}
fn default_rejection_memory() -> IsoDuration {
    IsoDuration::from_secs(7 * 86_400)
}
fn default_max_attempts() -> u32 {
    3
}
fn default_retry_base() -> IsoDuration {
    IsoDuration::from_secs(2)
}
fn default_retry_cap() -> IsoDuration {
    IsoDuration::from_secs(900)
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {0}")]
pub struct PolicyError(pub String);

/// A machine-readable reason with its human sentence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub code: &'static str,
    pub message: String,
    /// The step the rule fired on, for plans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
}

/// What the policy decided for a request, before rate limits and scheduling.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Blocked,
    KycRequired,
    Tier(Tier),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
    pub approval_expiry: IsoDuration,
    pub max_attempts: u32,
    /// Who is asked when the request names nobody: the first allowed approver.
    pub approver: Option<EmailAddress>,
    /// The approvers every step that needs approval allows (the intersection of their types'
    /// `approvers`); `None` when no such step names approvers (the defaults then apply).
    pub required_approvers: Option<Vec<EmailAddress>>,
    /// Per-type rate limits every action step counts against.
    pub rate_limits: Vec<(String, RateLimit)>,
    /// Distinct approvals needed (the largest any approval step asks for; at least 1).
    pub approvals_required: u32,
    /// Distinct rejections that reject it (the smallest any approval step asks for; at least 1).
    pub rejections_required: u32,
    /// Who else is asked, and after how long without a decision (the first approval step's
    /// type's chain, else the defaults').
    pub escalation: Vec<(chrono::Duration, Vec<EmailAddress>)>,
    /// Whether the requester is told when approved work completes or fails, and who else is
    /// (any step's type that asks for it).
    pub completion_mail: bool,
    pub notify: Vec<EmailAddress>,
}

impl Decision {
    pub fn reason_codes(&self) -> Vec<String> {
        let mut codes: Vec<String> = Vec::new();
        for r in &self.reasons {
            if !codes.iter().any(|c| c == r.code) {
                codes.push(r.code.to_owned());
            }
        }
        codes
    }
}

/// What the policy current now says about work that is about to start (or continue with its
/// next step). The answer depends on the steps still to run, not on the ones already done.
#[derive(Debug, Clone, PartialEq)]
pub enum Recheck {
    /// It may run.
    Run,
    /// Tier-1 work waits `pending` (kill switch, a zero automatic limit); `reason` says why.
    Hold { reason: String },
    /// Work that would run automatically now needs a human's approval.
    NeedsApproval { decision: Box<Decision> },
    /// The policy now makes it tier 3: recorded for a human, never run by the system.
    Manual { reasons: Vec<Reason> },
    /// The policy now blocks it (or requires KYC the user lacks).
    Blocked { reasons: Vec<Reason> },
}

/// What the evaluation needs to know about the request and the caller.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub action_types: Vec<&'a str>,
    /// Each action step's payload, in the same order (payload thresholds read them).
    pub payloads: Vec<&'a serde_json::Value>,
    pub risk_score: Option<u8>,
    pub confidence: Option<f64>,
    pub kyc_verified: bool,
}

impl Policy {
    pub fn default_policy() -> Self {
        // The embedded default is checked by a unit test, so this cannot fail in a build that passed.
        Self::checked(serde_json::from_str(DEFAULT_POLICY_JSON))
            .unwrap_or_else(|e| panic!("embedded infra/policy.toml: {e}"))
    }

    pub fn parse_toml(text: &str) -> Result<Self, PolicyError> {
        Self::checked(toml::from_str(text))
    }

    pub fn parse_json(value: serde_json::Value) -> Result<Self, PolicyError> {
        Self::checked(serde_json::from_value(value))
    }

    /// A parsed policy, if it parsed and passes [`Policy::check`].
    fn checked<E: std::fmt::Display>(parsed: Result<Self, E>) -> Result<Self, PolicyError> {
        let policy = parsed.map_err(|e| PolicyError(e.to_string()))?;
        policy.check()?;
        Ok(policy)
    }

    /// Rules a parser cannot express: every type known, every built-in type covered, sane numbers.
    pub fn check(&self) -> Result<(), PolicyError> {
        let d = &self.defaults;
        if !(0.0..=1.0).contains(&d.min_confidence) {
            return Err(PolicyError("defaults.min_confidence must be between 0 and 1".into()));
        }
        if !(1..=20).contains(&d.max_attempts) {
            return Err(PolicyError("defaults.max_attempts must be between 1 and 20".into()));
        }
        check_expiry("defaults.approval_expiry", d.approval_expiry)?;
        check_memory("defaults.rejection_memory", d.rejection_memory)?;
        if d.retry_base.as_secs() == 0 || d.retry_base > d.retry_cap || d.retry_cap.as_secs() > 86_400 {
            return Err(PolicyError(
                "defaults.retry_base must be positive and at most retry_cap (at most a day)".into(),
            ));
        }
        for (i, entry) in d.allowed_approvers.iter().enumerate() {
            let ok = match entry.strip_prefix('@') {
                Some(domain) => EmailAddress::parse(&format!("x@{domain}")).is_some(),
                None => EmailAddress::parse(entry).is_some(),
            };
            if !ok {
                return Err(PolicyError(format!(
                    "defaults.allowed_approvers[{i}] must be an email address or @domain"
                )));
            }
        }
        self.auto_execution.check()?;
        for name in BUILTIN_ACTION_TYPES {
            if !self.types.contains_key(*name) {
                return Err(PolicyError(format!("types.{name}: missing")));
            }
        }
        for (name, rule) in &self.types {
            let builtin = BUILTIN_ACTION_TYPES.contains(&name.as_str());
            if builtin && rule.connector.is_some() {
                return Err(PolicyError(format!("types.{name}.connector: built-in types run their own handlers")));
            }
            if builtin && rule.schema.is_some() {
                return Err(PolicyError(format!("types.{name}.schema: a built-in type's payload rules are built in")));
            }
            if !builtin {
                if !crate::domain::custom_types::valid_name(name) {
                    return Err(PolicyError(format!(
                        "types.{name}: a declared type's name is 1 to 64 of A-Z a-z 0-9 _ . : -"
                    )));
                }
                if let Some(why) = crate::domain::custom_types::reserved(name, BUILTIN_ACTION_TYPES) {
                    return Err(PolicyError(format!("types.{name}: {why}")));
                }
                // Something must run it: a connector, or a human (tier 3).
                match &rule.connector {
                    None if rule.tier != Some(Tier::Manual) && !rule.blocked => {
                        return Err(PolicyError(format!(
                            "types.{name}: a declared type of tier 1 or 2 names the connector that runs it (or is tier 3, for a human)"
                        )))
                    }
                    None => {}
                    Some(c) if rule.tier == Some(Tier::Manual) => {
                        return Err(PolicyError(format!(
                            "types.{name}.connector: a tier-3 type is done by a human; `{c}` would never run it"
                        )))
                    }
                    Some(c) => {
                        let connector = self.connectors.get(c).ok_or_else(|| {
                            PolicyError(format!("types.{name}.connector: no connector `{c}` in [connectors]"))
                        })?;
                        if rule.reversible && !connector.serves(crate::domain::connectors::Phase::Rollback) {
                            return Err(PolicyError(format!(
                                "types.{name}: reversible needs connector `{c}` to serve rollback (or say reversible = false)"
                            )));
                        }
                    }
                }
            }
            if rule.description.as_ref().is_some_and(|d| d.chars().count() > 1000) {
                return Err(PolicyError(format!("types.{name}.description: at most 1000 characters")));
            }
            if rule.tier.is_none() && !rule.blocked {
                return Err(PolicyError(format!("types.{name}: needs a tier (or blocked = true)")));
            }
            if let Some(expiry) = rule.approval_expiry {
                check_expiry(&format!("types.{name}.approval_expiry"), expiry)?;
            }
            if let Some(memory) = rule.rejection_memory {
                check_memory(&format!("types.{name}.rejection_memory"), memory)?;
            }
            crate::domain::approvers::expand(&rule.approvers, &self.approver_groups)
                .map_err(|e| PolicyError(format!("types.{name}.approvers: {e}")))?;
            for (field, n) in
                [("approvals_required", rule.approvals_required), ("reject_requires", rule.reject_requires)]
            {
                if n.is_some_and(|n| !(1..=crate::domain::approvers::MAX_QUORUM).contains(&n)) {
                    return Err(PolicyError(format!(
                        "types.{name}.{field} must be between 1 and {}",
                        crate::domain::approvers::MAX_QUORUM
                    )));
                }
            }
            if rule.payload_thresholds.len() > crate::domain::payload_rules::MAX_THRESHOLDS {
                return Err(PolicyError(format!(
                    "types.{name}.payload_thresholds: at most {}",
                    crate::domain::payload_rules::MAX_THRESHOLDS
                )));
            }
            for (i, t) in rule.payload_thresholds.iter().enumerate() {
                t.check().map_err(|e| PolicyError(format!("types.{name}.payload_thresholds[{i}]: {e}")))?;
            }
            let listed = self.approver_emails(&rule.approvers).len();
            // The largest quorum any payload can ask for is held to the same rules.
            let threshold_quorum =
                rule.payload_thresholds.iter().filter_map(|t| t.approvals_required).max().unwrap_or(1);
            let (n, m) =
                (rule.approvals_required.unwrap_or(1).max(threshold_quorum), rule.reject_requires.unwrap_or(1));
            if (n > 1 || m > 1) && rule.approvers.is_empty() {
                return Err(PolicyError(format!(
                    "types.{name}: a quorum (approvals_required, reject_requires) needs the type's own `approvers`"
                )));
            }
            // Distinct people: enough of them that every full set of votes decides (the
            // requester never counts, so intake refuses what their absence makes unreachable).
            if (n > 1 || m > 1) && listed < (n + m - 1) as usize {
                return Err(PolicyError(format!(
                    "types.{name}.approvals_required: {n} approvals and {m} rejections need at least {} approvers; `approvers` names {listed}",
                    n + m - 1
                )));
            }
            if listed > crate::domain::approvers::MAX_POOL {
                return Err(PolicyError(format!(
                    "types.{name}.approvers: at most {} people",
                    crate::domain::approvers::MAX_POOL
                )));
            }
            let expiry = rule.approval_expiry.unwrap_or(self.defaults.approval_expiry).as_secs();
            let own = crate::domain::approvers::chain(&rule.escalation, rule.escalate_after, &rule.escalate_to);
            if rule.escalate_after.is_some() == rule.escalate_to.is_empty() {
                return Err(PolicyError(format!("types.{name}: escalate_after and escalate_to go together")));
            }
            crate::domain::approvers::check_chain(
                &format!("types.{name}.escalation"),
                &own,
                expiry,
                &self.approver_groups,
            )
            .map_err(PolicyError)?;
            let told = crate::domain::approvers::expand(&rule.notify, &self.approver_groups)
                .map_err(|e| PolicyError(format!("types.{name}.notify: {e}")))?;
            if told.len() > crate::domain::approvers::MAX_POOL {
                return Err(PolicyError(format!(
                    "types.{name}.notify: at most {} people",
                    crate::domain::approvers::MAX_POOL
                )));
            }
            if rule.max_attempts.is_some_and(|n| !(1..=20).contains(&n)) {
                return Err(PolicyError(format!("types.{name}.max_attempts must be between 1 and 20")));
            }
            for t in &rule.risk_thresholds {
                if t.above >= 100 {
                    return Err(PolicyError(format!("types.{name}.risk_thresholds: above must be below 100")));
                }
            }
            for l in &rule.rate_limits {
                if l.limit == 0 {
                    return Err(PolicyError(format!("types.{name}.rate_limits: a limit of 0 is `blocked = true`")));
                }
                if l.limit > MAX_LIMIT {
                    return Err(PolicyError(format!("types.{name}.rate_limits: a limit is at most {MAX_LIMIT}")));
                }
            }
        }
        for (name, connector) in &self.connectors {
            connector.check(name).map_err(PolicyError)?;
        }
        crate::domain::integrations::check_policy(&self.integrations).map_err(PolicyError)?;
        crate::domain::approvers::check_groups(&self.approver_groups).map_err(PolicyError)?;
        if d.escalate_after.is_some() == d.escalate_to.is_empty() {
            return Err(PolicyError("defaults: escalate_after and escalate_to go together".into()));
        }
        crate::domain::approvers::check_chain(
            "defaults.escalation",
            &self.default_escalation(),
            d.approval_expiry.as_secs(),
            &self.approver_groups,
        )
        .map_err(PolicyError)?;
        let domain_ok = |d: &str| {
            let d = d.trim_start_matches('@');
            !d.is_empty()
                && d.len() <= 253
                && d.contains('.')
                && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        };
        if let Some(bad) = self.defaults.forward_domains.iter().find(|d| !domain_ok(d)) {
            return Err(PolicyError(format!("defaults.forward_domains: `{bad}` is not a domain name")));
        }
        self.custom_types().map_err(PolicyError)?;
        Ok(())
    }

    /// The recipient domains `gmail.forward` may send to.
    pub fn forward_domains(&self) -> &[String] {
        &self.defaults.forward_domains
    }

    /// The declared types' payload rules, compiled (a schema that does not compile is the error).
    pub fn custom_types(&self) -> Result<crate::domain::custom_types::CustomTypes, String> {
        crate::domain::custom_types::CustomTypes::compile(
            self.types
                .iter()
                .filter(|(name, _)| !BUILTIN_ACTION_TYPES.contains(&name.as_str()))
                .map(|(name, rule)| (name, rule.schema.as_ref(), !rule.blocked)),
        )
    }

    /// Whether `candidate` may be named to approve an action the policy decided as `decision`:
    /// one of the approvers every approval step allows, or (when no step names any) the
    /// default approver or an `allowed_approvers` entry.
    pub fn approver_allowed(&self, decision: &Decision, candidate: &EmailAddress) -> bool {
        if let Some(required) = &decision.required_approvers {
            return required.contains(candidate);
        }
        self.defaults.approver.as_ref() == Some(candidate)
            || self.defaults.allowed_approvers.iter().any(|entry| match entry.strip_prefix('@') {
                Some(domain) => {
                    candidate.as_str().rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
                }
                None => candidate.matches(entry),
            })
    }

    /// Whether `action`'s approval stands under this policy: an administrator's does; anyone
    /// else's only while the policy still allows that person to approve these steps.
    fn approval_still_counts(&self, decision: &Decision, action: &crate::domain::Action) -> bool {
        let is_requester = |by: &str| action.is_requester(by);
        let self_allowed = self.allows_self_approval(action.steps.iter().filter_map(|s| s.kind.action_type()));
        if !action.votes.is_empty() {
            // Each approval that still stands, once per person: an administrator's, or one by
            // someone the policy in force still allows (the requester only where it allows that).
            let standing: Vec<crate::domain::approvers::Vote> = action
                .votes
                .iter()
                .filter(|v| v.decision == crate::domain::approvers::VoteKind::Approve)
                .filter(|v| self_allowed || !is_requester(&v.approver))
                .filter(|v| {
                    (v.admin && !is_requester(&v.approver))
                        || EmailAddress::parse(&v.approver)
                            .is_some_and(|by| self.may_decide(decision, action, &by, v.at, self_allowed))
                })
                .cloned()
                .collect();
            return crate::domain::approvers::tally(&standing, decision.approvals_required, u32::MAX)
                == crate::domain::approvers::Outcome::Approved;
        }
        // An approval from before votes were recorded is one person's: not a quorum.
        if decision.approvals_required > 1 {
            return false;
        }
        let by_requester = action.decided_by.as_deref().is_some_and(is_requester);
        // A requester's own approval stands only while the policy still allows it for every step.
        if by_requester && !self_allowed {
            return false;
        }
        if action.decided_by_admin && !by_requester {
            return true;
        }
        action
            .decided_by
            .as_deref()
            .and_then(EmailAddress::parse)
            .is_some_and(|by| self.approver_allowed(decision, &by))
    }

    /// Whether `who` may decide `action` as the policy decided it (`decision`) at `at`: an
    /// approver it allows, someone an escalation that happened reached, or the delegate of an
    /// allowed approver while the delegation lasted (the requester's only where `self_allowed`).
    pub fn may_decide(
        &self,
        decision: &Decision,
        action: &crate::domain::Action,
        who: &EmailAddress,
        at: chrono::DateTime<chrono::Utc>,
        self_allowed: bool,
    ) -> bool {
        self.approver_allowed(decision, who)
            || Self::escalated_to(action, decision, who)
            || self.delegate_of_allowed(action, decision, who, at, self_allowed)
    }

    /// Whether `who` was asked by an escalation that happened to `action` and that the policy in
    /// force still has (an escalation lead decides only once the escalation reached them).
    fn escalated_to(action: &crate::domain::Action, decision: &Decision, who: &EmailAddress) -> bool {
        let same = |a: &EmailAddress| a.as_str().eq_ignore_ascii_case(who.as_str());
        action.escalations.iter().take(action.escalation_level as usize).any(|e| e.to.iter().any(same))
            && decision.escalation.iter().any(|(_, to)| to.iter().any(same))
    }

    /// Whether `who` decided at `at` as the delegate of someone the policy in force allows (the
    /// requester only where self-approval still stands), while the delegation lasted.
    fn delegate_of_allowed(
        &self,
        action: &crate::domain::Action,
        decision: &Decision,
        who: &EmailAddress,
        at: chrono::DateTime<chrono::Utc>,
        self_allowed: bool,
    ) -> bool {
        action.delegated.iter().any(|d| {
            d.to.eq_ignore_ascii_case(who.as_str())
                && at < d.until
                && (self_allowed || !action.is_requester(&d.from))
                && EmailAddress::parse(&d.from).is_some_and(|from| self.approver_allowed(decision, &from))
        })
    }

    /// Whether `who` may stand in for an approver: someone this policy could ever ask (the
    /// default approver, an `allowed_approvers` entry, a type's approvers, a group member or an
    /// escalation's people), never an arbitrary outside address.
    pub fn may_stand_in(&self, who: &EmailAddress) -> bool {
        let same = |a: &EmailAddress| a.as_str().eq_ignore_ascii_case(who.as_str());
        let d = &self.defaults;
        let by_default = d.approver.as_ref().is_some_and(same)
            || d.allowed_approvers.iter().any(|entry| match entry.strip_prefix('@') {
                Some(domain) => who.as_str().rsplit_once('@').is_some_and(|(_, at)| at.eq_ignore_ascii_case(domain)),
                None => who.matches(entry),
            });
        let listed = self.types.values().any(|r| {
            self.approver_emails(&r.approvers).iter().any(same)
                || crate::domain::approvers::chain(&r.escalation, r.escalate_after, &r.escalate_to)
                    .iter()
                    .any(|l| self.approver_emails(&l.to).iter().any(same))
        });
        by_default || listed || self.approver_groups.values().flatten().any(same)
    }

    /// What governs while the stored override cannot be read: this policy with automatic
    /// execution switched off, so nothing runs without a human until an admin fixes it.
    pub fn fail_safe(&self) -> Self {
        let mut safe = self.clone();
        safe.auto_execution.enabled = false;
        safe
    }

    pub fn rule(&self, action_type: &str) -> Option<&TypeRule> {
        self.types.get(action_type)
    }

    /// `decision` for tier-1 work of `action_types` sent to a human because the circuit breaker
    /// is open (`on_open = "require_approval"`): approval, by someone every step's type allows
    /// (its `approvers`, as for tier-2 steps), with reasons that say so.
    pub fn demote(&self, decision: &Decision, action_types: &[&str]) -> Decision {
        let mut required = decision.required_approvers.clone();
        let (mut approvals_required, mut rejections_required) = (decision.approvals_required, u32::MAX);
        for t in action_types {
            let Some(rule) = self.rule(t) else { continue };
            approvals_required = approvals_required.max(rule.approvals_required.unwrap_or(1));
            rejections_required = rejections_required.min(rule.reject_requires.unwrap_or(u32::MAX));
            if rule.approvers.is_empty() {
                continue;
            }
            let listed = self.approver_emails(&rule.approvers);
            required = Some(match required.take() {
                None => listed,
                Some(so_far) => so_far.into_iter().filter(|a| listed.contains(a)).collect(),
            });
        }
        let mut reasons: Vec<Reason> = decision.reasons.iter().filter(|r| r.code != "auto_execute").cloned().collect();
        reasons.push(Reason {
            code: "breaker_open_requires_approval",
            message:
                "the circuit breaker on automatic execution is open, so a human decides (on_open = require_approval)"
                    .into(),
            step: None,
        });
        reasons.push(Reason {
            code: "needs_approval",
            message: "runs once a human approves (tier 2)".into(),
            step: None,
        });
        Decision {
            verdict: Verdict::Tier(Tier::Approval),
            reasons,
            required_approvers: required,
            approvals_required,
            rejections_required: if rejections_required == u32::MAX { 1 } else { rejections_required },
            ..decision.clone()
        }
    }

    /// Whether a requester may approve their own work of these types: only when every one of
    /// them says `allow_self_approval = true`.
    pub fn allows_self_approval<'a>(&self, action_types: impl IntoIterator<Item = &'a str>) -> bool {
        let mut any = false;
        for t in action_types {
            if !self.rule(t).is_some_and(|r| r.allow_self_approval) {
                return false;
            }
            any = true;
        }
        any
    }

    /// How long a rejection of work of these types is remembered: the longest of theirs.
    pub fn rejection_memory<'a>(&self, action_types: impl IntoIterator<Item = &'a str>) -> chrono::Duration {
        action_types
            .into_iter()
            .map(|t| self.rule(t).and_then(|r| r.rejection_memory).unwrap_or(self.defaults.rejection_memory))
            .max()
            .unwrap_or(self.defaults.rejection_memory)
            .to_chrono()
    }

    pub fn is_reversible(&self, action_type: &str) -> bool {
        self.rule(action_type).is_none_or(|r| r.reversible)
    }

    /// Re-evaluates stored work before a step runs: the policy current at that moment governs
    /// every step, not the one the action was created under. `approved` says whether a human
    /// approved it (then tier 2 may run); `kyc_verified` is the user's KYC state now.
    pub fn recheck(&self, action: &crate::domain::Action, approved: bool, kyc_verified: bool) -> Recheck {
        let remaining: Vec<&str> =
            action.steps.iter().skip(action.next_step()).filter_map(|s| s.kind.action_type()).collect();
        let payloads: Vec<&serde_json::Value> =
            action.steps.iter().skip(action.next_step()).filter_map(|s| s.kind.payload()).collect();
        if remaining.is_empty() {
            return Recheck::Run;
        }
        let decision = self.evaluate(&Subject {
            action_types: remaining,
            payloads,
            risk_score: action.risk_score,
            confidence: action.confidence,
            kyc_verified,
        });
        match decision.verdict {
            Verdict::Blocked | Verdict::KycRequired => Recheck::Blocked { reasons: decision.reasons },
            Verdict::Tier(Tier::Manual) => Recheck::Manual { reasons: decision.reasons },
            Verdict::Tier(Tier::Auto) => Recheck::Run,
            // Approved by someone the current policy still accepts for these steps.
            Verdict::Tier(Tier::Approval) if approved && self.approval_still_counts(&decision, action) => Recheck::Run,
            Verdict::Tier(Tier::Approval) => {
                // Only the switches for automatic execution stand in the way: hold, and run
                // when they are back (an emergency stop is not a request for approval).
                let switches = ["auto_execution_disabled", "auto_limit_zero", "needs_approval"];
                if decision.reasons.iter().all(|r| switches.contains(&r.code)) {
                    let reason = decision
                        .reasons
                        .iter()
                        .find(|r| r.code != "needs_approval")
                        .map(|r| format!("{}: {}", r.code, r.message))
                        .unwrap_or_else(|| "auto_execution_disabled: automatic execution is switched off".into());
                    Recheck::Hold { reason }
                } else {
                    Recheck::NeedsApproval { decision: Box::new(decision) }
                }
            }
        }
    }

    /// Decides the tier of a request and collects every rule that fired.
    pub fn evaluate(&self, subject: &Subject<'_>) -> Decision {
        let mut reasons = Vec::new();
        let mut blocked = false;
        let mut kyc_missing = false;
        let mut tier = Tier::Auto;
        let mut expiry = self.defaults.approval_expiry;
        let mut max_attempts = self.defaults.max_attempts;
        let mut required: Option<Vec<EmailAddress>> = None;
        let (mut approvals_required, mut rejections_required) = (1u32, u32::MAX);
        let mut escalation: Option<Vec<crate::domain::approvers::EscalationLevel>> = None;
        let (mut completion_mail, mut notify): (bool, Vec<EmailAddress>) = (false, Vec::new());
        let mut rate_limits = Vec::new();
        let plan = subject.action_types.len() > 1;
        let reason =
            |code: &'static str, message: String, index: usize| Reason { code, message, step: plan.then_some(index) };

        for (index, action_type) in subject.action_types.iter().enumerate() {
            let Some(rule) = self.rule(action_type) else {
                // Unknown types never reach the policy (validation refuses them); stay safe anyway.
                blocked = true;
                reasons.push(reason("blocked", format!("{action_type} is not a known action type"), index));
                continue;
            };
            if rule.blocked {
                blocked = true;
                reasons.push(reason("blocked", format!("{action_type} is blocked by policy"), index));
                continue;
            }
            if rule.requires_kyc && !subject.kyc_verified {
                kyc_missing = true;
                reasons.push(reason("kyc_required", format!("{action_type} requires a KYC-verified user"), index));
            }
            let mut step_tier = rule.tier.unwrap_or(Tier::Approval);
            if step_tier == Tier::Manual {
                reasons.push(reason(
                    "manual_only",
                    format!("{action_type} is carried out by a human, never by the system"),
                    index,
                ));
            }
            if rule.requires_approval && step_tier < Tier::Approval {
                step_tier = Tier::Approval;
                reasons.push(reason("requires_approval", format!("{action_type} always requires approval"), index));
            }
            for threshold in &rule.risk_thresholds {
                if subject.risk_score.is_some_and(|r| r > threshold.above) && step_tier < threshold.tier {
                    step_tier = threshold.tier;
                    reasons.push(reason(
                        "risk_above_threshold",
                        format!(
                            "risk score {} is above {} for {action_type}",
                            subject.risk_score.unwrap_or(0),
                            threshold.above
                        ),
                        index,
                    ));
                }
            }
            let mut payload_quorum = 1;
            if let Some(payload) = subject.payloads.get(index) {
                for t in &rule.payload_thresholds {
                    let Some(found) = t.fires(payload) else { continue };
                    // A quorum alone implies approval; a tier says which.
                    step_tier = step_tier.max(t.tier.unwrap_or(Tier::Approval));
                    payload_quorum = payload_quorum.max(t.approvals_required.unwrap_or(1));
                    let needs = t.approvals_required.map(|n| format!(": {n} approvals")).unwrap_or_default();
                    reasons.push(reason("payload_above_threshold", format!("{found} for {action_type}{needs}"), index));
                }
            }
            if step_tier == Tier::Approval && rule.tier == Some(Tier::Approval) {
                reasons.push(reason("type_requires_approval", format!("{action_type} is a tier-2 action type"), index));
            }
            tier = tier.max(step_tier);
            if let Some(e) = rule.approval_expiry {
                expiry = expiry.min(e);
            }
            if let Some(n) = rule.max_attempts {
                max_attempts = max_attempts.min(n);
            }
            // A step that needs approval and names its approvers limits who may approve the
            // whole action: everyone who approves must be allowed by every such step.
            if step_tier == Tier::Approval && !rule.approvers.is_empty() {
                let listed = self.approver_emails(&rule.approvers);
                required = Some(match required.take() {
                    None => listed,
                    Some(so_far) => so_far.into_iter().filter(|a| listed.contains(a)).collect(),
                });
            }
            completion_mail |= rule.completion_mail;
            for person in self.approver_emails(&rule.notify) {
                if !notify.contains(&person) {
                    notify.push(person);
                }
            }
            if escalation.is_none() {
                let own = crate::domain::approvers::chain(&rule.escalation, rule.escalate_after, &rule.escalate_to);
                if !own.is_empty() {
                    escalation = Some(own);
                }
            }
            if step_tier == Tier::Approval {
                approvals_required = approvals_required.max(rule.approvals_required.unwrap_or(1)).max(payload_quorum);
                rejections_required = rejections_required.min(rule.reject_requires.unwrap_or(u32::MAX));
            }
            for limit in &rule.rate_limits {
                rate_limits.push(((*action_type).to_owned(), *limit));
            }
        }

        // Confidence and the kill switch only matter for work that could run automatically.
        let denied = blocked || kyc_missing;
        if tier == Tier::Auto && !denied {
            match subject.confidence {
                None => {
                    tier = Tier::Approval;
                    reasons.push(reason(
                        "confidence_missing",
                        "no confidence was given; automatic execution needs one".into(),
                        0,
                    ));
                }
                Some(c) if c < self.defaults.min_confidence => {
                    tier = Tier::Approval;
                    reasons.push(reason(
                        "low_confidence",
                        format!("confidence {c} is below {}", self.defaults.min_confidence),
                        0,
                    ));
                }
                Some(_) => {}
            }
        }
        if tier == Tier::Auto && !denied && !self.auto_execution.enabled {
            tier = Tier::Approval;
            reasons.push(reason("auto_execution_disabled", "automatic execution is switched off".into(), 0));
        }
        if tier == Tier::Auto && !denied && self.auto_execution.has_zero_limit() {
            tier = Tier::Approval;
            reasons.push(reason(
                "auto_limit_zero",
                "an automatic-execution limit is 0: nothing runs automatically".into(),
                0,
            ));
        }
        if tier == Tier::Approval && required.as_ref().is_some_and(Vec::is_empty) {
            blocked = true;
            reasons.push(reason(
                "no_common_approver",
                "the steps that need approval name no approver in common; split the plan".into(),
                0,
            ));
        }
        for r in &mut reasons {
            if !plan {
                r.step = None;
            }
        }
        let verdict = if blocked {
            Verdict::Blocked
        } else if kyc_missing {
            Verdict::KycRequired
        } else {
            let (code, message) = match tier {
                Tier::Auto => ("auto_execute", "runs automatically (tier 1)"),
                Tier::Approval => ("needs_approval", "runs once a human approves (tier 2)"),
                Tier::Manual => ("manual", "recorded for a human to carry out (tier 3)"),
            };
            reasons.push(Reason { code, message: message.into(), step: None });
            Verdict::Tier(tier)
        };
        let approver = match &required {
            Some(list) => list.first().cloned(),
            None => self.defaults.approver.clone(),
        };
        Decision {
            verdict,
            reasons,
            approval_expiry: expiry,
            max_attempts,
            approver,
            required_approvers: required,
            rate_limits,
            approvals_required,
            rejections_required: if rejections_required == u32::MAX { 1 } else { rejections_required },
            // Levels the (shortest) expiry cuts off would never happen: left out.
            escalation: self.escalation_people(
                escalation
                    .unwrap_or_else(|| self.default_escalation())
                    .into_iter()
                    .filter(|l| l.after.as_secs() < expiry.as_secs())
                    .collect(),
            ),
            completion_mail,
            notify: notify.into_iter().take(crate::domain::approvers::MAX_POOL).collect(),
        }
    }

    /// The defaults' escalation chain.
    fn default_escalation(&self) -> Vec<crate::domain::approvers::EscalationLevel> {
        let d = &self.defaults;
        crate::domain::approvers::chain(&d.escalation, d.escalate_after, &d.escalate_to)
    }

    /// A chain with its groups expanded.
    fn escalation_people(
        &self,
        levels: Vec<crate::domain::approvers::EscalationLevel>,
    ) -> Vec<(chrono::Duration, Vec<EmailAddress>)> {
        levels.into_iter().map(|l| (l.after.to_chrono(), self.approver_emails(&l.to))).collect()
    }

    /// The people `refs` name, groups expanded (a checked policy knows every group it names).
    pub fn approver_emails(&self, refs: &[crate::domain::approvers::ApproverRef]) -> Vec<EmailAddress> {
        crate::domain::approvers::expand(refs, &self.approver_groups).unwrap_or_default()
    }

    /// The members of group `name`, if the policy has it.
    pub fn group(&self, name: &str) -> Option<&[EmailAddress]> {
        self.approver_groups.get(name).map(Vec::as_slice)
    }
}

/// The largest count any limit may name.
const MAX_LIMIT: u32 = 1_000_000;
/// The longest an entity may cool down.
const MAX_COOLDOWN_SECS: u64 = 365 * 86_400;

impl AutoExecution {
    /// Every number in range, so nothing derived from them can overflow or never fit.
    fn check(&self) -> Result<(), PolicyError> {
        let limits = [
            ("per_hour", Some(self.per_hour)),
            ("per_day", Some(self.per_day)),
            ("per_user_per_hour", self.per_user_per_hour),
            ("per_user_per_day", self.per_user_per_day),
        ];
        for (field, value) in limits {
            if value.is_some_and(|v| v > MAX_LIMIT) {
                return Err(PolicyError(format!("auto_execution.{field} must be at most {MAX_LIMIT} (0 means none)")));
            }
        }
        if self.cooldown.as_secs() > MAX_COOLDOWN_SECS {
            return Err(PolicyError("auto_execution.cooldown must be at most 365 days".into()));
        }
        let b = &self.breaker;
        if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
            return Err(PolicyError("auto_execution.breaker.failure_ratio must be above 0 and at most 1".into()));
        }
        // A min_sample above the window (or a huge run) makes that trigger never fire: allowed.
        if !(1..=1000).contains(&b.window) || !(1..=MAX_LIMIT as usize).contains(&b.min_sample) {
            return Err(PolicyError(
                "auto_execution.breaker: window must be 1 to 1000 and min_sample 1 to 1000000".into(),
            ));
        }
        if !(1..=MAX_LIMIT).contains(&b.consecutive_failures) {
            return Err(PolicyError("auto_execution.breaker.consecutive_failures must be 1 to 1000000".into()));
        }
        Ok(())
    }

    /// Whether some automatic-execution limit is 0: nothing may then run automatically.
    pub fn has_zero_limit(&self) -> bool {
        self.per_hour == 0 || self.per_day == 0 || self.per_user_per_hour == Some(0) || self.per_user_per_day == Some(0)
    }
}

fn check_memory(field: &str, d: IsoDuration) -> Result<(), PolicyError> {
    if d.as_secs() > crate::domain::rejections::MAX_MEMORY_DAYS * 86_400 {
        return Err(PolicyError(format!(
            "{field} must be at most {} days",
            crate::domain::rejections::MAX_MEMORY_DAYS
        )));
    }
    Ok(())
}

fn check_expiry(field: &str, d: IsoDuration) -> Result<(), PolicyError> {
    if d.as_secs() < 1 || d.as_secs() > 30 * 86_400 {
        return Err(PolicyError(format!("{field} must be between a second and 30 days")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(types: &[&'static str], risk: Option<u8>, confidence: Option<f64>) -> Subject<'static> {
        Subject {
            action_types: types.to_vec(),
            payloads: Vec::new(),
            risk_score: risk,
            confidence,
            kyc_verified: false,
        }
    }

    fn tier_of(d: &Decision) -> Option<Tier> {
        match d.verdict {
            Verdict::Tier(t) => Some(t),
            _ => None,
        }
    }

    #[test]
    fn embedded_default_policy_is_valid() {
        let p = Policy::default_policy();
        assert_eq!(Policy::parse_toml(DEFAULT_POLICY_TOML).unwrap(), p, "the embedded JSON is the TOML");
        assert_eq!(p.auto_execution.per_hour, 10);
        assert_eq!(p.auto_execution.per_day, 50);
        assert_eq!(p.defaults.approval_expiry.as_secs(), 3_600);
    }

    #[test]
    fn default_tiers_match_the_table() {
        let p = Policy::default_policy();
        let confident = Some(0.9);
        for (t, expected) in [
            ("gmail.flag", Tier::Auto),
            ("gmail.mark_read", Tier::Auto),
            ("gmail.label", Tier::Auto),
            ("gmail.archive", Tier::Auto),
            ("gmail.spam", Tier::Approval),
            ("gmail.delete", Tier::Manual),
            ("send_email", Tier::Approval),
            ("calendar.create_event", Tier::Approval),
            ("http_request", Tier::Approval),
        ] {
            assert_eq!(tier_of(&p.evaluate(&subject(&[t], None, confident))), Some(expected), "{t}");
        }
    }

    #[test]
    fn archive_needs_approval_above_risk_50() {
        let p = Policy::default_policy();
        let at_50 = p.evaluate(&subject(&["gmail.archive"], Some(50), Some(0.9)));
        assert_eq!(tier_of(&at_50), Some(Tier::Auto));
        let at_51 = p.evaluate(&subject(&["gmail.archive"], Some(51), Some(0.9)));
        assert_eq!(tier_of(&at_51), Some(Tier::Approval));
        assert_eq!(at_51.reason_codes(), vec!["risk_above_threshold", "needs_approval"]);
    }

    #[test]
    fn low_or_missing_confidence_needs_approval() {
        let p = Policy::default_policy();
        let low = p.evaluate(&subject(&["gmail.flag"], None, Some(0.69)));
        assert_eq!(tier_of(&low), Some(Tier::Approval));
        assert!(low.reason_codes().contains(&"low_confidence".to_owned()));
        let missing = p.evaluate(&subject(&["gmail.flag"], None, None));
        assert!(missing.reason_codes().contains(&"confidence_missing".to_owned()));
        let exact = p.evaluate(&subject(&["gmail.flag"], None, Some(0.7)));
        assert_eq!(tier_of(&exact), Some(Tier::Auto));
        assert_eq!(exact.reason_codes(), vec!["auto_execute"]);
    }

    #[test]
    fn payment_is_blocked_and_purchase_needs_kyc() {
        let p = Policy::default_policy();
        let pay = p.evaluate(&subject(&["make_payment"], None, Some(1.0)));
        assert_eq!(pay.verdict, Verdict::Blocked);
        assert_eq!(pay.reason_codes(), vec!["blocked"]);
        let buy = p.evaluate(&subject(&["make_purchase"], None, Some(1.0)));
        assert_eq!(buy.verdict, Verdict::KycRequired);
        let mut verified = subject(&["make_purchase"], None, Some(1.0));
        verified.kyc_verified = true;
        assert_eq!(tier_of(&p.evaluate(&verified)), Some(Tier::Approval));
    }

    #[test]
    fn plan_takes_the_highest_tier_and_names_steps() {
        let p = Policy::default_policy();
        let d = p.evaluate(&subject(&["gmail.label", "send_email"], None, Some(0.95)));
        assert_eq!(tier_of(&d), Some(Tier::Approval));
        let typed = d.reasons.iter().find(|r| r.code == "type_requires_approval").unwrap();
        assert_eq!(typed.step, Some(1));
        assert_eq!(d.rate_limits.len(), 2);
        let blocked = p.evaluate(&subject(&["gmail.label", "make_payment"], None, Some(0.95)));
        assert_eq!(blocked.verdict, Verdict::Blocked);
    }

    #[test]
    fn kill_switch_turns_tier_one_into_approval() {
        let mut p = Policy::default_policy();
        p.auto_execution.enabled = false;
        let d = p.evaluate(&subject(&["gmail.flag"], None, Some(0.99)));
        assert_eq!(tier_of(&d), Some(Tier::Approval));
        assert!(d.reason_codes().contains(&"auto_execution_disabled".to_owned()));
    }

    #[test]
    fn invalid_policies_are_refused_whole() {
        let base = DEFAULT_POLICY_TOML;
        let unknown_type = format!("{base}\n[types.\"gmail.nuke\"]\ntier = 1\n");
        assert!(Policy::parse_toml(&unknown_type).unwrap_err().0.contains("gmail.nuke"));
        let missing = base.replace("[types.http_request]\ntier = 2", "");
        assert!(Policy::parse_toml(&missing).unwrap_err().0.contains("http_request"));
        let bad_tier = base.replace("[types.http_request]\ntier = 2", "[types.http_request]\ntier = 7");
        assert!(Policy::parse_toml(&bad_tier).is_err());
        let typo = base.replace("requires_kyc = true", "requires_kcy = true");
        assert!(Policy::parse_toml(&typo).is_err());
        let json = serde_json::to_value(Policy::default_policy()).unwrap();
        assert_eq!(Policy::parse_json(json).unwrap(), Policy::default_policy());
    }

    #[test]
    fn out_of_range_auto_execution_values_are_refused() {
        let base = DEFAULT_POLICY_TOML;
        let cooldown = base.replace("cooldown = \"PT24H\"", "cooldown = \"P999999999D\"");
        assert!(Policy::parse_toml(&cooldown).is_err(), "a cooldown that overflows time arithmetic");
        let long = base.replace("cooldown = \"PT24H\"", "cooldown = \"P400D\"");
        assert!(Policy::parse_toml(&long).unwrap_err().0.contains("cooldown"));
        let ratio = base.replace("cooldown = \"PT24H\"", "cooldown = \"PT24H\"\nbreaker = { failure_ratio = 7.0 }");
        assert!(Policy::parse_toml(&ratio).unwrap_err().0.contains("failure_ratio"));
        let window = base.replace("cooldown = \"PT24H\"", "cooldown = \"PT24H\"\nbreaker = { window = 0 }");
        assert!(Policy::parse_toml(&window).is_err());
        let huge = base.replace("per_hour = 10", "per_hour = 4294967295");
        assert!(Policy::parse_toml(&huge).unwrap_err().0.contains("per_hour"));
        let approvers = base.replace(
            "compensate_on_failure = false",
            "compensate_on_failure = false\nallowed_approvers = [\"not an address\"]",
        );
        assert!(Policy::parse_toml(&approvers).unwrap_err().0.contains("allowed_approvers"));
    }

    #[test]
    fn a_zero_automatic_limit_means_nothing_runs_automatically() {
        let mut p = Policy::default_policy();
        p.auto_execution.per_hour = 0;
        let d = p.evaluate(&subject(&["gmail.flag"], None, Some(0.99)));
        assert_eq!(tier_of(&d), Some(Tier::Approval));
        assert!(d.reason_codes().contains(&"auto_limit_zero".to_owned()));
        let mut p = Policy::default_policy();
        p.auto_execution.per_user_per_day = Some(0);
        assert_eq!(tier_of(&p.evaluate(&subject(&["gmail.flag"], None, Some(0.99)))), Some(Tier::Approval));
    }

    #[test]
    fn every_approval_steps_approvers_apply_not_the_last_step_naming_one() {
        let mut p = Policy::default_policy();
        let email = |s: &str| EmailAddress::parse(s).unwrap();
        p.types.get_mut("send_email").unwrap().approvers =
            vec![email("comms@example.com").into(), email("cfo@example.com").into()];
        p.types.get_mut("calendar.create_event").unwrap().approvers = vec![email("cfo@example.com").into()];
        // A tier-1 step naming an approver does not route the approval of another step.
        p.types.get_mut("gmail.flag").unwrap().approvers = vec![email("intern@example.com").into()];
        let d = p.evaluate(&subject(&["send_email", "gmail.flag"], None, Some(0.9)));
        assert_eq!(d.required_approvers, Some(vec![email("comms@example.com"), email("cfo@example.com")]));
        assert_eq!(d.approver, Some(email("comms@example.com")));
        assert!(!p.approver_allowed(&d, &email("intern@example.com")));
        let both = p.evaluate(&subject(&["send_email", "calendar.create_event"], None, Some(0.9)));
        assert_eq!(both.required_approvers, Some(vec![email("cfo@example.com")]));
        assert_eq!(both.approver, Some(email("cfo@example.com")));
        assert!(!p.approver_allowed(&both, &email("comms@example.com")));
        p.types.get_mut("calendar.create_event").unwrap().approvers = vec![email("ops@example.com").into()];
        let none = p.evaluate(&subject(&["send_email", "calendar.create_event"], None, Some(0.9)));
        assert_eq!(none.verdict, Verdict::Blocked);
        assert!(none.reason_codes().contains(&"no_common_approver".to_owned()));
    }

    #[test]
    fn a_request_may_name_only_an_approver_the_policy_allows() {
        let mut p = Policy::default_policy();
        let email = |s: &str| EmailAddress::parse(s).unwrap();
        p.defaults.allowed_approvers = vec!["@corp.example.com".into(), "lead@example.org".into()];
        let d = p.evaluate(&subject(&["send_email"], None, Some(0.9)));
        assert!(p.approver_allowed(&d, &email("approvals@example.com")), "the default approver");
        assert!(p.approver_allowed(&d, &email("anyone@CORP.example.com")));
        assert!(p.approver_allowed(&d, &email("Lead@example.org")));
        assert!(!p.approver_allowed(&d, &email("agent-mailbox@attacker.example")));
        assert!(!p.approver_allowed(&d, &email("x@sub.corp.example.com")));
    }

    fn queued_tier_one(action_type: &str) -> crate::domain::Action {
        let mut a = crate::domain::action::sample_action();
        a.tier = Some(Tier::Auto);
        a.status = crate::domain::Status::Queued;
        a.confidence = Some(0.9);
        a.approver = None;
        a.steps[0].kind = crate::domain::StepKind::Action {
            action_type: action_type.into(),
            payload: serde_json::json!({"message_id": "m1"}),
        };
        a
    }

    #[test]
    fn waiting_tier_one_work_answers_to_the_policy_current_when_it_starts() {
        let action = queued_tier_one("gmail.flag");
        let mut p = Policy::default_policy();
        assert_eq!(p.recheck(&action, false, false), Recheck::Run);
        p.types.get_mut("gmail.flag").unwrap().blocked = true;
        assert!(matches!(p.recheck(&action, false, false), Recheck::Blocked { .. }), "blocked after it was created");
        let mut p = Policy::default_policy();
        p.types.get_mut("gmail.flag").unwrap().requires_approval = true;
        assert!(matches!(p.recheck(&action, false, false), Recheck::NeedsApproval { .. }));
        let mut approved = action.clone();
        approved.decided_by = Some("boss@example.com".into());
        assert_eq!(p.recheck(&approved, true, false), Recheck::Run, "approved work may run");
        // …unless the approval steps now name approvers and the one who approved is not one.
        p.types.get_mut("gmail.flag").unwrap().approvers = vec![EmailAddress::parse("cfo@example.com").unwrap().into()];
        assert!(matches!(p.recheck(&approved, true, false), Recheck::NeedsApproval { .. }));
        // An administrator's approval through the API stands.
        approved.decided_by_admin = true;
        assert_eq!(p.recheck(&approved, true, false), Recheck::Run);
        // Someone the policy no longer allows at all does not.
        let mut p = Policy::default_policy();
        p.types.get_mut("gmail.flag").unwrap().requires_approval = true;
        p.defaults.allowed_approvers.clear();
        approved.decided_by_admin = false;
        assert!(matches!(p.recheck(&approved, true, false), Recheck::NeedsApproval { .. }));
        let mut p = Policy::default_policy();
        p.types.get_mut("gmail.flag").unwrap().tier = Some(Tier::Manual);
        assert!(matches!(p.recheck(&action, true, false), Recheck::Manual { .. }));
        let mut p = Policy::default_policy();
        p.defaults.min_confidence = 0.95;
        assert!(matches!(p.recheck(&action, false, false), Recheck::NeedsApproval { .. }));
    }

    #[test]
    fn the_kill_switch_holds_every_tier_one_step_and_an_unreadable_policy_fails_safe() {
        let action = queued_tier_one("gmail.flag");
        let mut p = Policy::default_policy();
        p.auto_execution.enabled = false;
        assert!(
            matches!(p.recheck(&action, false, false), Recheck::Hold { ref reason } if reason.starts_with("auto_execution_disabled"))
        );
        let safe = Policy::default_policy().fail_safe();
        assert!(matches!(safe.recheck(&action, false, false), Recheck::Hold { .. }));
        // Only the steps still to run count: a done step's type being blocked stops nothing.
        let mut plan = queued_tier_one("gmail.archive");
        plan.steps.push(crate::domain::action::Step::new(
            1,
            crate::domain::StepKind::Action {
                action_type: "gmail.flag".into(),
                payload: serde_json::json!({"message_id": "m1"}),
            },
        ));
        plan.steps[0].state = crate::domain::StepState::Completed;
        let mut p = Policy::default_policy();
        p.types.get_mut("gmail.archive").unwrap().blocked = true;
        assert_eq!(p.recheck(&plan, false, false), Recheck::Run);
    }

    #[test]
    fn withdrawn_kyc_blocks_work_that_needs_it() {
        let mut action = queued_tier_one("make_purchase");
        action.tier = Some(Tier::Approval);
        action.decided_by = Some("boss@example.com".into());
        let p = Policy::default_policy();
        assert_eq!(p.recheck(&action, true, true), Recheck::Run);
        assert!(matches!(p.recheck(&action, true, false), Recheck::Blocked { .. }));
    }

    #[test]
    fn windows_align_to_utc_hours_and_days() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:34:56Z").unwrap().with_timezone(&chrono::Utc);
        let (s, e) = Window::Hour.bounds(at);
        assert_eq!(crate::domain::time::format_time(s), "2026-03-01T12:00:00Z");
        assert_eq!(crate::domain::time::format_time(e), "2026-03-01T13:00:00Z");
        let (s, e) = Window::Day.bounds(at);
        assert_eq!(crate::domain::time::format_time(s), "2026-03-01T00:00:00Z");
        assert_eq!(crate::domain::time::format_time(e), "2026-03-02T00:00:00Z");
    }

    fn with_type(name: &str, rule: serde_json::Value) -> Result<Policy, PolicyError> {
        let mut doc = serde_json::to_value(Policy::parse_toml(DEFAULT_POLICY_TOML).unwrap()).unwrap();
        doc["types"][name] = rule;
        Policy::parse_json(doc)
    }

    #[test]
    fn a_declared_type_is_checked_for_its_name_tier_and_schema() {
        let schema = serde_json::json!({"type": "object", "required": ["page"]});
        let ok = with_type("CHANGE_URL", serde_json::json!({"tier": 3, "schema": schema, "description": "by hand"}))
            .unwrap();
        assert!(ok.custom_types().unwrap().names().any(|n| n == "CHANGE_URL"));
        assert!(with_type("BLOCKED_ONE", serde_json::json!({"blocked": true})).is_ok());
        let refused = |name: &str, rule: serde_json::Value| with_type(name, rule).unwrap_err().0;
        assert!(refused("AUTO_THING", serde_json::json!({"tier": 1})).contains("names the connector"));
        assert!(
            refused("AUTO_THING", serde_json::json!({"tier": 1, "connector": "nope"})).contains("no connector `nope`")
        );
        assert!(refused("send_email", serde_json::json!({"tier": 2, "connector": "shop"})).contains("built-in"));
        let mut doc = serde_json::to_value(Policy::parse_toml(DEFAULT_POLICY_TOML).unwrap()).unwrap();
        doc["connectors"]["shop"] =
            serde_json::json!({"url": "https://hooks.example.com/c", "secret": "actiongate/shop"});
        doc["types"]["ADD_LINK"] = serde_json::json!({"tier": 1, "connector": "shop"});
        let no_rollback = Policy::parse_json(doc.clone()).unwrap_err().0;
        assert!(no_rollback.contains("reversible needs connector `shop` to serve rollback"), "{no_rollback}");
        doc["types"]["ADD_LINK"]["reversible"] = serde_json::json!(false);
        doc["types"]["BY_HAND"] = serde_json::json!({"tier": 3, "connector": "shop"});
        assert!(Policy::parse_json(doc.clone()).unwrap_err().0.contains("would never run it"));
        doc["types"].as_object_mut().unwrap().remove("BY_HAND");
        let ok = Policy::parse_json(doc.clone()).unwrap();
        assert_eq!(ok.types["ADD_LINK"].connector.as_deref(), Some("shop"));
        doc["connectors"]["shop"]["secret"] = serde_json::json!("prod/db");
        assert!(Policy::parse_json(doc).unwrap_err().0.contains("connectors.shop.secret"));
        assert!(refused("has space", serde_json::json!({"tier": 3})).contains("name is 1 to 64"));
        assert!(refused("BROKEN", serde_json::json!({"tier": 3, "schema": {"type": 7}}))
            .starts_with("types.BROKEN.schema:"));
        assert!(refused("send_email", serde_json::json!({"tier": 2, "schema": {}})).contains("built in"));
        assert!(
            refused("LONG", serde_json::json!({"tier": 3, "description": "x".repeat(1001)})).contains("description")
        );
        assert!(
            refused("TYPO", serde_json::json!({"tier": 3, "shema": {}})).contains("shema"),
            "unknown fields are refused"
        );
        assert!(refused("plan", serde_json::json!({"tier": 3})).contains("names plans"));
        assert!(refused("Send_Email", serde_json::json!({"tier": 3})).contains("`send_email`"));
        assert!(refused("make_paymnet", serde_json::json!({"blocked": true})).contains("a typo?"));
        let recursive = serde_json::json!({"$defs": {"t": {"items": {"$ref": "#/$defs/t"}}}, "$ref": "#/$defs/t"});
        assert!(refused("LOOP", serde_json::json!({"tier": 3, "schema": recursive})).contains("`$ref` is not allowed"));
        let deep = (0..20).fold(serde_json::json!({"type": "string"}), |s, _| serde_json::json!({"items": s}));
        assert!(refused("DEEP", serde_json::json!({"tier": 3, "schema": deep})).contains("nests deeper"));
        let big = serde_json::json!({"enum": (0..5000).map(|i| format!("value-{i}")).collect::<Vec<_>>()});
        assert!(refused("BIG", serde_json::json!({"tier": 3, "schema": big})).contains("larger than"));
    }

    #[test]
    fn payload_thresholds_raise_the_tier_and_the_quorum_and_are_checked() {
        let base = include_str!("../../../infra/policy.toml");
        let groups = "[approver_groups]\nfinance = [\"a@example.com\", \"b@example.com\", \"c@example.com\"]\n";
        let mut p = Policy::parse_toml(&format!("{base}\n{groups}")).unwrap();
        let rule = p.types.get_mut("send_email").unwrap();
        rule.tier = Some(Tier::Approval);
        rule.approvers = vec![crate::domain::approvers::ApproverRef::Group("finance".into())];
        rule.payload_thresholds = vec![
            crate::domain::payload_rules::PayloadThreshold {
                field: "/to".into(),
                above: 2.0,
                tier: None,
                approvals_required: Some(2),
            },
            crate::domain::payload_rules::PayloadThreshold {
                field: "/to".into(),
                above: 40.0,
                tier: Some(Tier::Manual),
                approvals_required: None,
            },
        ];
        p.check().unwrap();
        let decide = |to: usize| {
            let payload = serde_json::json!({"to": vec!["x@example.com"; to], "subject": "s", "text": "t"});
            let d = p.evaluate(&Subject {
                action_types: vec!["send_email"],
                payloads: vec![&payload],
                risk_score: None,
                confidence: Some(0.9),
                kyc_verified: false,
            });
            (tier_of(&d), d.approvals_required, d.reason_codes())
        };
        let (tier, quorum, codes) = decide(2);
        assert_eq!((tier, quorum), (Some(Tier::Approval), 1));
        assert!(!codes.contains(&"payload_above_threshold".to_owned()));
        let (tier, quorum, codes) = decide(3);
        assert_eq!((tier, quorum), (Some(Tier::Approval), 2), "three recipients need two approvals");
        assert!(codes.contains(&"payload_above_threshold".to_owned()));
        assert_eq!(decide(41).0, Some(Tier::Manual), "a mass mailing is left to a human");
        // The quorum a payload can ask for is held to the type's approvers like its own.
        let mut q = p.clone();
        q.types.get_mut("send_email").unwrap().payload_thresholds[0].approvals_required = Some(4);
        assert!(q.check().unwrap_err().0.contains("approvals_required"));
        q.types.get_mut("send_email").unwrap().approvers.clear();
        q.types.get_mut("send_email").unwrap().payload_thresholds[0].approvals_required = Some(2);
        assert!(q.check().unwrap_err().0.contains("needs the type's own `approvers`"));
        q.types.get_mut("send_email").unwrap().payload_thresholds[0].field = "to".into();
        assert!(q.check().unwrap_err().0.contains("payload_thresholds[0]"));
        // The executor's recheck reads the payload too.
        let mut action = crate::domain::action::sample_action();
        action.steps[0].kind = crate::domain::StepKind::Action {
            action_type: "send_email".into(),
            payload: serde_json::json!({"to": ["a@x.com", "b@x.com", "c@x.com"], "subject": "s", "text": "t"}),
        };
        action.votes = vec![crate::domain::approvers::Vote {
            approver: "a@example.com".into(),
            decision: crate::domain::approvers::VoteKind::Approve,
            at: action.created_at,
            via: "link".into(),
            reason: None,
            admin: false,
        }];
        assert!(matches!(p.recheck(&action, true, false), Recheck::NeedsApproval { .. }), "one approval of two");
    }

    #[test]
    fn approver_groups_and_quorums_are_checked_and_a_plan_needs_its_largest_quorum() {
        let base = include_str!("../../../infra/policy.toml");
        let with = |extra: &str| Policy::parse_toml(&format!("{base}\n{extra}"));
        let groups = "[approver_groups]\nfinance = [\"a@example.com\", \"b@example.com\", \"c@example.com\"]\n";
        let p = with(groups).unwrap();
        assert_eq!(p.group("finance").map(<[_]>::len), Some(3));
        let mut p2 = p.clone();
        let rule = p2.types.get_mut("send_email").unwrap();
        rule.approvers = vec![crate::domain::approvers::ApproverRef::Group("finance".into())];
        rule.approvals_required = Some(2);
        assert!(p2.check().is_ok());
        p2.types.get_mut("send_email").unwrap().approvals_required = Some(4);
        assert!(p2.check().unwrap_err().0.contains("approvals_required"), "more approvals than approvers");
        p2.types.get_mut("send_email").unwrap().approvals_required = Some(0);
        assert!(p2.check().is_err());
        p2.types.get_mut("send_email").unwrap().approvals_required = Some(2);
        p2.types.get_mut("send_email").unwrap().approvers =
            vec![crate::domain::approvers::ApproverRef::Group("nope".into())];
        assert!(p2.check().unwrap_err().0.contains("nope"), "an unknown group is named");
        assert!(with("[approver_groups]\nFinance = [\"a@example.com\"]\n").is_err(), "group names are lower case");
        assert!(with("[approver_groups]\nx = []\n").is_err(), "a group has members");
        assert!(with("[approver_groups]\nx = [\"not an address\"]\n").is_err());

        // A plan: the largest quorum of its approval steps, the smallest rejection count.
        let mut p3 = p.clone();
        p3.types.get_mut("send_email").unwrap().approvers =
            vec![crate::domain::approvers::ApproverRef::Group("finance".into())];
        p3.types.get_mut("send_email").unwrap().approvals_required = Some(3);
        p3.types.get_mut("gmail.spam").unwrap().approvers =
            vec![crate::domain::approvers::ApproverRef::Group("finance".into())];
        p3.types.get_mut("gmail.spam").unwrap().approvals_required = Some(2);
        p3.types.get_mut("gmail.spam").unwrap().reject_requires = Some(2);
        let d = p3.evaluate(&Subject {
            action_types: vec!["gmail.spam", "send_email"],
            payloads: Vec::new(),
            risk_score: None,
            confidence: Some(0.9),
            kyc_verified: false,
        });
        assert_eq!((d.approvals_required, d.rejections_required), (3, 2));
        assert_eq!(d.required_approvers.as_ref().map(Vec::len), Some(3), "the group, expanded");
        let auto = p3.evaluate(&Subject {
            action_types: vec!["gmail.flag"],
            payloads: Vec::new(),
            risk_score: None,
            confidence: Some(0.9),
            kyc_verified: false,
        });
        assert_eq!((auto.approvals_required, auto.rejections_required), (1, 1));
    }
}
