//! The domain: pure types and rules, no I/O. The action model (identifiers, the lifecycle
//! state machine, steps and plans, audit events), request validation, the declarative policy,
//! placement of work the policy stops, and the circuit breaker's arithmetic. Nothing here
//! imports a module outside `crate::domain` (a test reads the sources to keep it so).

pub mod action;
pub mod approval;
pub mod approvers;
pub mod breaker;
pub mod builtin_schemas;
pub mod caller;
pub mod catalog;
pub mod connectors;
pub mod custom_types;
pub mod digest;
pub mod duration;
pub mod edits;
pub mod effects;
pub mod execution;
pub mod field_error;
pub mod google_payloads;
pub mod guards;
pub mod html;
pub mod ids;
pub mod integrations;
pub mod mime;
pub mod notify;
pub mod payload_rules;
pub mod placement;
pub mod policy;
pub mod rejections;
pub mod schema_parts;
pub mod stats;
pub mod status;
pub mod streams;
pub mod time;
pub mod token;
pub mod validation;

pub use action::{Action, AuditEvent, Step, StepKind, StepState, Tier};
pub use duration::IsoDuration;
pub use ids::{ActionId, EmailAddress, IdempotencyKey, UserId};
pub use status::{IllegalTransition, Status};
