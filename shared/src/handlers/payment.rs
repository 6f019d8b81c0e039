//! `make_payment` and `make_purchase`: money moves only through a payment provider, and none
//! is configured. The handlers re-check the policy at execution time (blocked types, KYC) and
//! refuse; they never pretend a payment happened.

use super::{Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use serde_json::Value;

pub struct Payment {
    pub action_type: &'static str,
}

impl Handler for Payment {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        crate::validation::validate_payload(self.action_type, payload, "payload")
            .map_err(|e| HandlerError::permanent("invalid_payload", e.to_string()))
    }

    fn preview(&self, payload: &Value) -> String {
        crate::domain::catalog::describe(self.action_type, payload)
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        Reversibility::Irreversible
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let policy = ctx.deps.policy.current().await;
            let rule = policy.rule(self.action_type);
            if rule.is_none_or(|r| r.blocked) {
                return Err(HandlerError::permanent("blocked", format!("{} is blocked by policy", self.action_type)));
            }
            if rule.is_some_and(|r| r.requires_kyc) && !ctx.deps.kyc.verified(ctx.user).await? {
                return Err(HandlerError::permanent(
                    "kyc_required",
                    format!("{} requires a KYC-verified user", self.action_type),
                ));
            }
            Err(HandlerError::permanent(
                "no_payment_provider",
                "no payment provider is configured; nothing was charged",
            ))
        })
    }

    fn rollback<'a>(
        &'a self,
        _: &'a StepContext<'a>,
        _: &'a Value,
        _: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async { Err(HandlerError::permanent("not_reversible", "payments are not reversed by actiongate")) })
    }
}
