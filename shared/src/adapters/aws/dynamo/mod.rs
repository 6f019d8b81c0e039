//! DynamoDB persistence: actions, their audit trail, idempotency records, rate counters and
//! user profiles. Every state change is one `TransactWriteItems` that checks the previous
//! version and state of the action and appends the audit event.
//!
//! One `DynamoStore` implements the store port's capabilities, one file each: [`actions`] (create, transitions, reads, the
//! `due` index), [`approvals`] (links), [`guards`] (rate counters, cool-downs, the circuit
//! breaker), [`admin`] (policy override, KYC, credentials, system audit streams),
//! [`snapshots`] and [`stats`]; [`keys`] builds every key. This file keeps the errors and the
//! transaction plumbing they share (conflict retries, cancellation reasons).

mod actions;
mod admin;
mod approvals;
mod guards;
mod integrations;
pub mod keys;
mod listing;
mod notifications;
mod snapshots;
mod stats;

use crate::domain::approval::{ApprovalRecord, ApprovalUse};
use crate::domain::guards::{Cooldown, CounterSpec};
use crate::domain::{Action, ActionId, AuditEvent, IdempotencyKey, Status, UserId};
use crate::ports::store::*;
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

type Item = HashMap<String, AttributeValue>;

/// How many times a transaction cancelled only by conflicts is tried again.
const TRANSACTION_CONFLICT_RETRIES: u32 = 4;

/// A failed SDK call, with its whole error chain.
fn aws_error<E: std::error::Error + 'static, R: std::fmt::Debug>(e: SdkError<E, R>) -> StoreError {
    StoreError::Aws(DisplayErrorContext(e).to_string())
}

impl From<aws_sdk_dynamodb::error::BuildError> for StoreError {
    fn from(e: aws_sdk_dynamodb::error::BuildError) -> Self {
        StoreError::Aws(e.to_string())
    }
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    audit_table: String,
    snapshot_retention: chrono::Duration,
    /// Where a write that recorded a notification asks for its delivery at once.
    delivery_queue: Option<std::sync::Arc<dyn crate::ports::queue::WorkQueue>>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, audit_table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            audit_table: audit_table.into(),
            snapshot_retention: chrono::Duration::days(DEFAULT_ROLLBACK_RETENTION_DAYS),
            delivery_queue: None,
        }
    }

    /// Status notifications recorded by this store's writes are queued for delivery at once
    /// (without it, the sweep finds them when it runs).
    pub fn with_delivery_queue(mut self, queue: std::sync::Arc<dyn crate::ports::queue::WorkQueue>) -> Self {
        self.delivery_queue = Some(queue);
        self
    }

    /// How long a step's rollback snapshot is kept (its item's TTL).
    pub fn with_snapshot_retention(mut self, retention: chrono::Duration) -> Self {
        self.snapshot_retention = retention;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// One TransactWriteItems, tried again (up to 4 times, after 10–20, 20–40, 40–80, 80–160 ms)
    /// while it is cancelled only by conflicts with other transactions.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput,
        SdkError<TransactWriteItemsError, aws_smithy_runtime_api::http::Response>,
    > {
        let mut attempt = 0;
        loop {
            let result = self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            match result {
                Err(e) if attempt < TRANSACTION_CONFLICT_RETRIES && only_conflicts(&e) => {
                    attempt += 1;
                    let ceiling = 10u64 << attempt;
                    let delay = ceiling / 2 + (rand::random::<f64>() * (ceiling / 2) as f64) as u64;
                    tracing::debug!(attempt, delay_ms = delay, "transaction conflict; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
                other => return other,
            }
        }
    }

    /// Runs a transaction whose only expected failure is a condition: any cancelled item means
    /// someone else changed something first.
    async fn conditional_transaction(&self, items: Vec<TransactWriteItem>) -> Result<(), TransitionError> {
        match self.transact(items).await {
            Ok(_) => Ok(()),
            Err(err) if !cancelled_indexes(&err).is_empty() => Err(TransitionError::Conflict),
            Err(err) => Err(TransitionError::Store(aws_error(err))),
        }
    }

    /// One item by key, read consistently.
    async fn item(&self, pk: impl Into<String>, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, s(pk.into()))
            .key(keys::SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out.item)
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Whether an item's TTL has passed (DynamoDB deletes such items lazily).
fn expired(item: &Item, now: DateTime<Utc>) -> bool {
    item.get(keys::TTL)
        .and_then(|v| v.as_n().ok())
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|t| t < now.timestamp())
}

/// Whether a transaction was cancelled only because another one held one of its items
/// (`TransactionConflict`; DynamoDB applied nothing): worth trying again at once, unlike a
/// failed condition. Hot items (the day's outcome counters, the circuit breaker) meet this
/// under concurrency.
fn only_conflicts<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
            let codes: Vec<&str> = e.cancellation_reasons().iter().filter_map(|r| r.code()).collect();
            conflict_codes(&codes)
        }
        _ => false,
    }
}

/// `codes`: the cancellation reasons' codes (`None` for the items that were fine).
fn conflict_codes(codes: &[&str]) -> bool {
    codes.contains(&"TransactionConflict") && codes.iter().all(|c| matches!(*c, "None" | "TransactionConflict"))
}

/// Indexes of the transaction items whose condition failed, if the transaction was cancelled.
fn cancelled_indexes<R>(err: &SdkError<TransactWriteItemsError, R>) -> Vec<usize> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
            .cancellation_reasons()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
            .map(|(i, _)| i)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_cancellation_by_conflicts_is_tried_again() {
        assert!(conflict_codes(&["None", "TransactionConflict", "None"]));
        assert!(!conflict_codes(&["None", "None"]), "nothing conflicted");
        assert!(
            !conflict_codes(&["TransactionConflict", "ConditionalCheckFailed"]),
            "a failed condition is an answer, not a conflict"
        );
        assert!(!conflict_codes(&["ValidationError"]));
    }
}
