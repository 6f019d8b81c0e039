//! The action model: identifiers, the lifecycle state machine, steps and plans, audit events.

pub mod action;
pub mod duration;
pub mod ids;
pub mod status;

pub use action::{Action, AuditEvent, Step, StepKind, StepState, Tier};
pub use duration::IsoDuration;
pub use ids::{ActionId, EmailAddress, IdempotencyKey, UserId};
pub use status::{IllegalTransition, Status};
