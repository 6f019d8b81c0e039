//! Entry points: what each function does with the event it is given. An API Gateway request
//! is routed to a service method through the `adapters::apigw` boundary (`api_intake`,
//! `api_approval`, `api_rollback`); an SQS batch runs through the executor's batch loop
//! (`sqs_batch`). The functions' `main.rs` only wire the services and call these. Nothing in
//! the library imports this module.

pub mod api_approval;
pub mod api_intake;
pub mod api_rollback;
pub mod sqs_batch;
