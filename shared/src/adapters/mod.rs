//! Adapters: the ports implemented on real infrastructure. `aws` holds DynamoDB (split by
//! capability, as the store port is), SQS, SES, EventBridge Scheduler and the SDK's lazy
//! clients. Adapters import ports and the domain, never a service.

pub mod aws;
