//! hello-sdk: `hello` plus the setup every actiongate function starts with, done the same way
//! (`actiongate::telemetry` logging, `actiongate::config::aws_config`, a DynamoDB client), and
//! nothing else. `make bench` starts it beside hello and the functions: what it takes over hello
//! is the part of a function's init that is the AWS SDK's, and what a function takes over it is
//! the function's own.

use actiongate::config::aws_config;
use actiongate::telemetry::{self, Startup};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut startup = Startup::begin();
    telemetry::init(actiongate::config::log_directives());
    startup.step("logging");
    let aws = aws_config().await;
    startup.step("sdk_config");
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    startup.step("dynamodb_client");
    startup.ready();
    run(service_fn(move |event: LambdaEvent<Value>| {
        // Held by the handler as a function holds its store; the echo does not call it.
        let _dynamodb = &dynamodb;
        async move { Ok::<Value, Error>(event.payload) }
    }))
    .await
}
