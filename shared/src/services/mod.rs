//! Services: one per function (intake, split by route group; approval; executor; sweep;
//! rollback) plus what several share (notices, the policy in force, the circuit breaker's
//! bookkeeping). They orchestrate the domain's rules over ports only: never an adapter.
//!
//! `http` is the HTTP boundary the API services still speak directly (identity from claims,
//! bodies, the one `ApiError`, JSON responses).

pub mod approval;
pub mod breaker;
pub mod executor;
pub mod http;
pub mod intake;
pub mod notices;
pub mod policy_source;
pub mod rollback;
pub mod sweep;
