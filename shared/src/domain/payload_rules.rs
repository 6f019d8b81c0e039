//! Policy rules on a payload's own values: `payload_thresholds` on a type. A number (or a
//! list's length) above a limit raises the tier, or the approvals it needs — so a payment of
//! 50 000 needs two people where one of 50 needs one, and an edit that crosses the line before
//! approval needs the extra approval too.

use crate::domain::Tier;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most thresholds one type may have.
pub const MAX_THRESHOLDS: usize = 20;
/// The longest field pointer.
const MAX_FIELD_CHARS: usize = 256;

/// `{field = "/amount", above = 1000, approvals_required = 2}` or `{…, tier = 3}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadThreshold {
    /// A JSON Pointer (RFC 6901) into the payload, e.g. `/amount` or `/to`.
    pub field: String,
    /// Fires when the value is a number greater than this, or a list with more items.
    pub above: f64,
    /// The tier it raises the step to (at least).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// The distinct approvals it needs (at least); implies approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_required: Option<u32>,
}

impl PayloadThreshold {
    /// What the threshold measures in `payload` when it fires: the number or list length found,
    /// in words (`None`: absent or null, or not above). A value that cannot be measured (text,
    /// an object, a boolean) fires: a threshold never fails open on a value it cannot read.
    pub fn fires(&self, payload: &Value) -> Option<String> {
        let found = payload.pointer(&self.field)?;
        let (measure, words) = match found {
            Value::Null => return None,
            Value::Number(n) => match n.as_f64() {
                Some(n) => (n, format!("{} {n}", label(&self.field))),
                None => return Some(format!("{} is not a measurable number", label(&self.field))),
            },
            Value::Array(items) => (items.len() as f64, format!("{} items in {}", items.len(), label(&self.field))),
            _ => return Some(format!("{} is not a number or a list", label(&self.field))),
        };
        (measure > self.above).then(|| format!("{words} is above {}", self.above))
    }

    /// The threshold's own mistakes, for `types.<name>.payload_thresholds[i]`.
    pub fn check(&self) -> Result<(), String> {
        if !(self.field.starts_with('/') && self.field.chars().count() <= MAX_FIELD_CHARS) {
            return Err(format!(
                "field must be a JSON Pointer into the payload, such as \"/amount\" (at most {MAX_FIELD_CHARS} characters)"
            ));
        }
        if !self.above.is_finite() {
            return Err("above must be a number".into());
        }
        if self.tier.is_none() && self.approvals_required.is_none() {
            return Err("give tier, approvals_required or both".into());
        }
        if self.tier == Some(Tier::Auto) {
            return Err("tier 1 lowers nothing: give tier 2 or 3".into());
        }
        if self.approvals_required.is_some_and(|n| !(1..=crate::domain::approvers::MAX_QUORUM).contains(&n)) {
            return Err(format!("approvals_required must be between 1 and {}", crate::domain::approvers::MAX_QUORUM));
        }
        Ok(())
    }
}

/// `/amount` → `amount`, `/lines/0/total` → `lines/0/total` (pointer escapes undone).
fn label(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn threshold(field: &str, above: f64) -> PayloadThreshold {
        PayloadThreshold { field: field.into(), above, tier: None, approvals_required: Some(2) }
    }

    #[test]
    fn numbers_and_list_lengths_fire_above_the_limit() {
        let t = threshold("/amount", 1000.0);
        assert_eq!(t.fires(&json!({"amount": 1000.5})).as_deref(), Some("amount 1000.5 is above 1000"));
        assert_eq!(t.fires(&json!({"amount": 1000})), None, "at the limit is not above it");
        assert!(t.fires(&json!({"amount": "5000"})).is_some(), "a value it cannot measure fires");
        assert!(t.fires(&json!({"amount": {"v": 1}})).is_some());
        assert_eq!(t.fires(&json!({})), None, "absent");
        assert_eq!(t.fires(&json!({"amount": null})), None, "null is absent");
        let to = threshold("/to", 2.0);
        assert_eq!(to.fires(&json!({"to": ["a", "b", "c"]})).as_deref(), Some("3 items in to is above 2"));
        assert_eq!(to.fires(&json!({"to": ["a", "b"]})), None);
        let nested = threshold("/lines/0/total", 10.0);
        assert_eq!(nested.fires(&json!({"lines": [{"total": 11}]})).as_deref(), Some("lines/0/total 11 is above 10"));
    }

    #[test]
    fn a_threshold_must_say_where_and_what() {
        assert!(threshold("/amount", 1.0).check().is_ok());
        assert!(threshold("amount", 1.0).check().unwrap_err().contains("JSON Pointer"));
        assert!(threshold(&format!("/{}", "a".repeat(300)), 1.0).check().is_err());
        assert!(threshold("/amount", f64::INFINITY).check().is_err());
        let mut t = threshold("/amount", 1.0);
        t.approvals_required = None;
        assert!(t.check().unwrap_err().contains("give tier"));
        t.tier = Some(Tier::Auto);
        assert!(t.check().is_err());
        t.tier = Some(Tier::Manual);
        assert!(t.check().is_ok());
        t.approvals_required = Some(0);
        assert!(t.check().is_err());
        t.approvals_required = Some(11);
        assert!(t.check().is_err());
    }
}
