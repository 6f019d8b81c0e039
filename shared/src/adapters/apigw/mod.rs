//! The API Gateway boundary (HTTP API, payload format 2.0): requests in, responses out.

pub mod console;
pub mod http;
pub mod pages;
