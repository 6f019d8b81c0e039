//! Structured JSON logs. Application services open spans with an `action_id` field, and the
//! JSON formatter prints the current span's fields on every line, so every log line of an
//! action's work carries its id.

use std::time::{Duration, Instant};
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

/// An integration's circuit breaker opened (the `IntegrationCircuitOpen` metric with an
/// `Integration` dimension, for an alarm per integration).
pub fn integration_open_metric(name: &str, now: chrono::DateTime<chrono::Utc>) {
    let mut line: serde_json::Value = match serde_json::from_str(&metric_line("IntegrationCircuitOpen", 1, now)) {
        Ok(v) => v,
        Err(_) => return,
    };
    line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = serde_json::json!([["Integration"]]);
    line["Integration"] = serde_json::json!(name);
    println!("{line}");
}

/// The stored policy override could not be read: automatic execution is stopped until an
/// administrator replaces it (the `PolicyUnreadable` metric, for an alarm).
pub fn policy_unreadable_metric(now: chrono::DateTime<chrono::Utc>) {
    println!("{}", metric_line("PolicyUnreadable", 1, now));
}

fn breaker_metric_line(open: bool, now: chrono::DateTime<chrono::Utc>) -> String {
    metric_line("CircuitBreakerOpen", u8::from(open), now)
}

/// One count in the embedded metric format.
fn metric_line(name: &str, value: u8, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": now.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [{"Name": name, "Unit": "Count"}],
            }],
        },
    });
    line[name] = serde_json::json!(value);
    line.to_string()
}

/// JSON logs on stdout, filtered by `directives` (`RUST_LOG`, read by
/// `crate::config::log_directives`; see [`log_filter`]; `info` when unset). Trace-level events
/// are compiled out of release builds.
pub fn init(directives: Option<String>) {
    let (filter, refused) = log_filter(directives, Level::INFO);
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

/// The filter `RUST_LOG` (`directives`) asks for: a default level and `target=level` directives,
/// comma-separated (`info`, `warn,actiongate=debug`); `default` when it is unset. A value that
/// does not parse gives `default` and the reason, to log once logging is up.
pub fn log_filter(directives: Option<String>, default: Level) -> (Targets, Option<String>) {
    match directives {
        Some(value) => match parse_filter(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (only(default), Some(format!("RUST_LOG {value:?} does not parse ({e}); logging at {default}"))),
        },
        None => (only(default), None),
    }
}

/// The target of [`Startup`]'s event: `RUST_LOG=info,actiongate::startup=debug` turns it on.
pub const STARTUP_TARGET: &str = "actiongate::startup";

/// The message of [`Startup`]'s event.
pub const STARTUP_MESSAGE: &str = "ready for events";

/// The steps of a function's start and how long each took. When the function is ready for
/// events, [`Startup::ready`] logs them as one debug event (target [`STARTUP_TARGET`], field
/// `steps`, see [`parse_steps`]); `make bench` itemizes each function's init with it. Off, the
/// event costs a level check.
#[derive(Debug)]
pub struct Startup {
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl Startup {
    /// Starts the clock; called first thing in `main`, so that setting up logging is timed too.
    pub fn begin() -> Self {
        Self { last: Instant::now(), steps: Vec::with_capacity(8) }
    }

    /// Records that `name` took the time since the previous step (or since [`Startup::begin`]).
    pub fn step(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps.push((name, now.duration_since(self.last)));
        self.last = now;
    }

    /// Logs the steps, when debug logging is on for [`STARTUP_TARGET`] (the field is only
    /// formatted then).
    pub fn ready(self) {
        tracing::debug!(target: STARTUP_TARGET, steps = %format_steps(&self.steps), "{STARTUP_MESSAGE}");
    }
}

/// `name=µs` pairs, comma-separated: `logging=18,configuration=5`.
fn format_steps(steps: &[(&str, Duration)]) -> String {
    let pairs: Vec<String> = steps.iter().map(|(name, took)| format!("{name}={}", took.as_micros())).collect();
    pairs.join(",")
}

/// The steps of a [`Startup`] event's `steps` field, in order; `None` if it is not one.
pub fn parse_steps(field: &str) -> Option<Vec<(String, Duration)>> {
    field
        .split(',')
        .map(|pair| {
            let (name, micros) = pair.split_once('=')?;
            Some((name.to_owned(), Duration::from_micros(micros.parse().ok()?)))
        })
        .collect()
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
    fn startup_steps_are_written_as_the_benchmark_reads_them() {
        let steps = [("logging", Duration::from_micros(18)), ("dynamodb_client", Duration::from_micros(1_250))];
        let field = format_steps(&steps);
        assert_eq!(field, "logging=18,dynamodb_client=1250");
        let read = parse_steps(&field).unwrap();
        assert_eq!(read, vec![("logging".to_owned(), steps[0].1), ("dynamodb_client".to_owned(), steps[1].1)]);
        assert_eq!(parse_steps("logging=18,oops"), None);
        assert_eq!(parse_steps("logging=fast"), None);
        let filter = parse_filter("info,actiongate::startup=debug").unwrap();
        assert!(filter.would_enable(STARTUP_TARGET, &Level::DEBUG));
        assert!(!filter.would_enable("actiongate::store", &Level::DEBUG));
    }

    #[test]
    fn steps_are_timed_from_the_start_one_after_another() {
        let outside = Instant::now();
        let mut startup = Startup::begin();
        std::thread::sleep(Duration::from_millis(2));
        startup.step("first");
        std::thread::sleep(Duration::from_millis(1));
        startup.step("second");
        let elapsed = outside.elapsed();
        let names: Vec<&str> = startup.steps.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["first", "second"]);
        assert!(startup.steps[0].1 >= Duration::from_millis(2));
        assert!(startup.steps[1].1 >= Duration::from_millis(1));
        assert!(startup.steps[0].1 + startup.steps[1].1 <= elapsed, "each step is timed from the one before");
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
