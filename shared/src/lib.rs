//! actiongate: the library behind every Lambda function, in layers with one direction:
//!
//! `domain` ← `ports` ← `services` ← `adapters` / `handlers` ← `entry` ← `functions/*/main.rs`
//!
//! - [`domain`]: pure types and rules (ids, the state machine, actions, policy, guards,
//!   placement, approval links, execution, the breaker, the catalogue of descriptions);
//! - [`ports`]: the traits the services need, each with an in-memory implementation;
//! - [`services`]: one per function, orchestration over ports;
//! - [`adapters`]: the ports on AWS and the API Gateway boundary; [`handlers`]: one module per
//!   target system;
//! - [`entry`]: what each function does with its event (routes, the SQS batch loop);
//! - [`config`] and [`telemetry`]: the functions' wiring and logs.
//!
//! A test (`consistency.rs`) reads the sources and fails when an import points the wrong way.

pub mod adapters;
pub mod config;
pub mod domain;
pub mod entry;
pub mod handlers;
pub mod ports;
pub mod services;
pub mod telemetry;

pub use ports::clock::{Clock, FixedClock, SystemClock};
// The domain's rule modules keep their crate-level paths for callers.
pub use domain::{breaker, placement, policy, validation};
