//! Structured JSON logs. Application services open spans with an `action_id` field, and the
//! JSON formatter prints the current span's fields on every line, so every log line of an
//! action's work carries its id.

use tracing_subscriber::EnvFilter;

/// The CloudWatch namespace of the metrics the functions publish.
pub const METRIC_NAMESPACE: &str = "actiongate";

/// Publishes that the circuit breaker is open as a CloudWatch metric, in the embedded metric
/// format: one JSON line on stdout, which Lambda's log pipeline turns into the
/// `CircuitBreakerOpen` metric the template's alarm watches (no API call, no permission). Sent
/// while open only: no data means closed, and the alarm treats missing data as fine.
pub fn breaker_open_metric(now: chrono::DateTime<chrono::Utc>) {
    println!("{}", breaker_metric_line(true, now));
}

fn breaker_metric_line(open: bool, now: chrono::DateTime<chrono::Utc>) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": now.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [{"Name": "CircuitBreakerOpen", "Unit": "Count"}],
            }],
        },
        "CircuitBreakerOpen": u8::from(open),
    })
    .to_string()
}

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_metric_is_one_embedded_metric_format_line() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let line: serde_json::Value = serde_json::from_str(&breaker_metric_line(true, at)).unwrap();
        assert_eq!(line["CircuitBreakerOpen"], 1);
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], METRIC_NAMESPACE);
        assert_eq!(directive["Metrics"][0]["Name"], "CircuitBreakerOpen");
        assert!(breaker_metric_line(false, at).contains("\"CircuitBreakerOpen\":0"));
    }
}
