//! How times are written wherever people or clients read them: RFC 3339, UTC, whole seconds.

use chrono::{DateTime, Utc};

pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
