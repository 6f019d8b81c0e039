//! `make bench`: cold start, AWS requests and cost per lifecycle, throughput, memory and binary
//! size of the release functions, all measured in one run (`tests/src/bin/bench.rs` prints the
//! tables and writes `BENCHMARKS.md`).
//!
//! [`runtime_api`] runs a release binary as Lambda does, [`footprint`] measures each binary on
//! its own with it, [`proxy`] counts the AWS requests the functions make on the local stack,
//! [`lifecycles`] drives the stack and prices what it counted with [`cost`].

pub mod cost;
pub mod exec_clock;
pub mod footprint;
pub mod lifecycles;
pub mod proxy;
pub mod report;
pub mod runtime_api;

/// The functions, in the order the tables list them.
pub const FUNCTIONS: [&str; 5] = ["intake", "approval", "executor", "sweep", "rollback"];
/// The hello-world `lambda_runtime` function (`bench/hello`) the functions are compared with.
pub const HELLO: &str = "hello";
/// `hello` plus the setup every function starts with, done as they do it: JSON logging, the AWS
/// SDK's configuration and a DynamoDB client (`bench/hello-sdk`). What it takes over hello is
/// the AWS SDK's part of a function's init; what a function takes over it is its own.
pub const HELLO_SDK: &str = "hello-sdk";
/// The designated approver of the benchmark's tier-2 actions.
pub const APPROVER: &str = "ops@example.com";
