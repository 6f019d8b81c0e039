//! Services: one per function (intake, split by route group; approval; executor; sweep;
//! rollback) plus what several share (notices, the policy in force, the circuit breaker's
//! bookkeeping). They orchestrate the domain's rules over ports only: never an adapter.
//!
//! The API services take a `ports::api::Call` and answer a `Reply` or an `ApiError`; they
//! never see HTTP (the `entry` module routes requests to them).

pub mod approval;
pub mod breaker;
pub mod executor;
pub mod intake;
pub mod notices;
pub mod notify;
pub mod policy_source;
pub mod rollback;
pub mod sweep;
