//! The executor's SQS batch loop: each message of a batch runs in a task of its own, and only
//! the ones to try again (or dead-letter) are reported back (`ReportBatchItemFailures`), so one
//! bad or panicking message never fails its batch-mates.

use crate::ports::queue::ExecuteMessage;
use crate::services::executor::{ExecutorService, Outcome};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

/// Handles an SQS batch: messages run concurrently, and only the ones to retry are
/// reported, so one bad message never fails its batch-mates.
pub async fn handle_batch(
    service: &Arc<ExecutorService>,
    event: SqsEvent,
    deadline: DateTime<Utc>,
) -> SqsBatchResponse {
    let service = Arc::clone(service);
    let failed = run_isolated(event.records, move |record| {
        let service = Arc::clone(&service);
        async move { handle_message(&service, &record, deadline).await }
    })
    .await;
    let mut response = SqsBatchResponse::default();
    for (record, outcome) in failed {
        let retry = match outcome {
            Ok(outcome) => matches!(outcome, Outcome::Retry(_) | Outcome::DeadLetter(_)),
            Err(panic) => {
                tracing::error!(message_id = ?record.message_id, error = %panic, "message task panicked; its batch-mates are unaffected");
                true
            }
        };
        if retry {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.unwrap_or_default();
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// One message of the batch: a work message runs; anything else is dead-lettered.
pub async fn handle_message(service: &ExecutorService, record: &SqsMessage, deadline: DateTime<Utc>) -> Outcome {
    let message_id = record.message_id.clone().unwrap_or_default();
    let body = record.body.clone().unwrap_or_default();
    let message: ExecuteMessage = match serde_json::from_str(&body) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(message_id = %message_id, error = %e, body = %body.chars().take(200).collect::<String>(), "not a work message");
            return Outcome::DeadLetter(format!("not a work message: {e}"));
        }
    };
    let span =
        tracing::info_span!("execute", action_id = %message.action_id, step = message.step, message_id = %message_id);
    let outcome = service.run(&message, deadline).instrument(span.clone()).await;
    span.in_scope(|| tracing::info!(outcome = ?outcome, "message handled"));
    if let Outcome::DeadLetter(reason) = &outcome {
        tracing::error!(message_id = %message_id, reason = %reason, "unusable message");
    }
    outcome
}

/// Runs `work` for every item concurrently, each in a task of its own, so a panic in one
/// (release builds unwind) is reported for that item alone and never takes its batch-mates down.
pub async fn run_isolated<T, F, Fut, O>(items: Vec<T>, work: F) -> Vec<(T, Result<O, String>)>
where
    T: Clone + Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = O> + Send + 'static,
    O: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut by_task = HashMap::new();
    for item in items {
        let handle = tasks.spawn(work(item.clone()));
        by_task.insert(handle.id(), item);
    }
    let mut out = Vec::with_capacity(by_task.len());
    while let Some(joined) = tasks.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, value)) => (id, Ok(value)),
            Err(e) => (e.id(), Err(e.to_string())),
        };
        if let Some(item) = by_task.remove(&id) {
            out.push((item, result));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_message_never_takes_its_batch_mates_down() {
        let results = run_isolated(vec![1, 2, 3], |n| async move {
            if n == 2 {
                panic!("bad input");
            }
            n * 10
        })
        .await;
        let mut by_item: Vec<_> = results.into_iter().map(|(n, r)| (n, r.ok())).collect();
        by_item.sort();
        assert_eq!(by_item, vec![(1, Some(10)), (2, None), (3, Some(30))]);
    }
}
