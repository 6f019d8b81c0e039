//! Structured JSON logs. Application services open spans with an `action_id` field, and the
//! JSON formatter prints the current span's fields on every line, so every log line of an
//! action's work carries its id.

use tracing::Level;
use tracing_subscriber::filter::{ParseError, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

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

/// JSON logs on stdout, filtered by `RUST_LOG` (see [`log_filter`]; `info` when unset).
/// Trace-level events are compiled out of release builds.
pub fn init() {
    let (filter, refused) = log_filter(Level::INFO);
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
    if let Some(reason) = refused {
        tracing::warn!("{reason}");
    }
}

/// The filter `RUST_LOG` asks for: a default level and `target=level` directives,
/// comma-separated (`info`, `warn,actiongate=debug`); `default` when it is unset. A value that
/// does not parse gives `default` and the reason, to log once logging is up.
pub fn log_filter(default: Level) -> (Targets, Option<String>) {
    match crate::config::log_directives() {
        Some(value) => match parse_filter(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (only(default), Some(format!("RUST_LOG {value:?} does not parse ({e}); logging at {default}"))),
        },
        None => (only(default), None),
    }
}

fn parse_filter(value: &str) -> Result<Targets, ParseError> {
    value.trim().parse()
}

fn only(level: Level) -> Targets {
    Targets::new().with_default(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_takes_a_default_level_and_per_target_levels() {
        let filter = parse_filter("warn,actiongate=debug").unwrap();
        assert!(filter.would_enable("actiongate::store", &Level::DEBUG));
        assert!(!filter.would_enable("actiongate::store", &Level::TRACE));
        assert!(filter.would_enable("hyper", &Level::WARN));
        assert!(!filter.would_enable("hyper", &Level::INFO));
        let off = parse_filter(" info,h2=off ").unwrap();
        assert!(!off.would_enable("h2::proto", &Level::ERROR));
        assert!(off.would_enable("intake", &Level::INFO));
        assert!(parse_filter("actiongate=loud").is_err());
        assert!(only(Level::INFO).would_enable("anything", &Level::INFO));
        assert!(!only(Level::INFO).would_enable("anything", &Level::DEBUG));
    }

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
