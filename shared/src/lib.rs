//! actiongate: the library behind every Lambda function.
//!
//! Everything with logic lives here so it can be tested without a Lambda runtime:
//! the domain model and state machine ([`domain`]), request validation ([`validation`]),
//! the declarative policy ([`policy`]), DynamoDB and SQS adapters ([`store`], [`queue`]),
//! and one application service per function ([`intake`]).

pub mod api;
pub mod approval;
pub mod clock;
pub mod config;
pub mod domain;
pub mod executor;
pub mod handlers;
pub mod intake;
pub mod lazy;
pub mod mail;
pub mod notices;
pub mod policy_source;
pub mod queue;
pub mod rollback;
pub mod scheduler;
pub mod store;
pub mod sweep;
pub mod telemetry;

pub use clock::{Clock, FixedClock, SystemClock};
// The domain's rule modules keep their crate-level paths for callers.
pub use domain::{breaker, placement, policy, validation};
