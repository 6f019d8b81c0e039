//! The AWS side of the ports.

pub mod dynamo;
pub mod lazy;
pub mod scheduler;
pub mod secrets;
pub mod ses;
pub mod sqs;
