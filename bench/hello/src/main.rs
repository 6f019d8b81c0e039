//! hello: a hello-world `lambda_runtime` function that echoes its event. `make bench` reports
//! each actiongate function's init time and size relative to this binary, built the same way
//! (release profile, link) and on the same single-threaded Tokio runtime.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<Value, Error>(event.payload) })).await
}
