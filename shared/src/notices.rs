//! The mails actiongate sends besides approval requests: the circuit breaker's alert.

use crate::clock::format_time;
use chrono::{DateTime, Utc};

/// Who is told when the breaker opens: `auto_execution.alert_email`, else the default approver.
pub fn alert_recipient(policy: &crate::domain::policy::Policy) -> Option<&crate::domain::EmailAddress> {
    policy.auto_execution.alert_email.as_ref().or(policy.defaults.approver.as_ref())
}

/// The mail that tells an admin automatic execution is paused.
pub fn alert_mail(to: &crate::domain::EmailAddress, reason: &str, now: DateTime<Utc>) -> crate::mail::Mail {
    let text = format!(
        "actiongate paused automatic execution at {}: {reason}.\n\nTier-1 actions wait (pending) until an administrator resets the breaker with POST /admin/circuit-breaker/reset. Approved actions still run.\n",
        format_time(now)
    );
    crate::mail::Mail {
        to: vec![to.as_str().to_owned()],
        cc: vec![],
        subject: "actiongate: automatic execution paused (circuit breaker open)".into(),
        html: format!("<p>{}</p>", crate::approval::pages::escape(&text).replace("\n\n", "</p><p>")),
        text,
    }
}
