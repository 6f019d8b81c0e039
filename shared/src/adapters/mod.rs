//! Adapters: the ports on real infrastructure. `aws` holds DynamoDB (split by capability, as
//! the store port is), SQS, SES, EventBridge Scheduler and the SDK's lazy clients; `apigw` is
//! the API Gateway boundary (a request becomes a `Call`, a reply or refusal a JSON response,
//! approval links HTML pages). Adapters import ports and the domain, never a service.

pub mod apigw;
pub mod aws;
