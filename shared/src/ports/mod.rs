//! Ports: the traits the services need from the world, split by capability (the store's
//! actions, approvals, guards, admin, snapshots and stats; the work queue; mail; the wake-up
//! scheduler; the clock; handlers and credentials). Adapters implement them for AWS; every
//! port also has an in-memory implementation with the same semantics ([`memory`]), so the
//! services are tested without an emulator. Ports import only the domain.

pub mod api;
pub mod clock;
pub mod handler;
pub mod mail;
pub mod notify;
pub mod queue;
pub mod scheduler;
pub mod secrets;
pub mod store;

pub mod memory;
