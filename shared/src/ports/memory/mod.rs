//! In-memory implementations of every port, with the semantics of the real ones: conditional
//! writes on version and state, all-or-nothing transactions, counters that refuse what does
//! not fit, TTL read the way DynamoDB's is (expired items linger until a reader checks), and
//! at-least-once queue delivery. The adapter suite (`tests/tests/store_adapter.rs`) runs the
//! same checks against [`MemoryStore`] and the DynamoDB store, so the two cannot drift; the
//! services' unit tests and property tests run on these.

mod outbox;
mod secrets;
mod store;
mod store_admin;

pub use outbox::{MemoryDeliverer, MemoryMailer, MemoryQueue, MemoryWakeUps, Sent, WakeUp};
pub use secrets::MemorySecrets;
pub use store::MemoryStore;
