//! The built-in action types' payloads as JSON Schema (draft 2020-12), for agents that turn
//! action types into tool definitions (`GET /action-types`). The built-in validators
//! (`validation::validate_payload`) stay the rule; a test holds the two together on valid and
//! invalid samples of every type. Rules a schema cannot say (an end after its start, text or
//! html) are in the descriptions.

use crate::domain::validation::BUILTIN_ACTION_TYPES;
use serde_json::{json, Value};

fn message_id() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,256}$", "description": "a Gmail message id"})
}

fn emails(min: usize, max: usize) -> Value {
    json!({"type": "array", "minItems": min, "maxItems": max,
           "items": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$"}})
}

fn object(required: &[&str], properties: Value, description: &str) -> Value {
    json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
           "required": required, "properties": properties, "additionalProperties": false,
           "description": description})
}

fn http_request(rollback: bool) -> Value {
    let mut properties = json!({
        "method": {"enum": crate::domain::validation::HTTP_METHODS},
        "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/@\\s?#]+([/?#]|$)",
                "description": "http(s), with a host, without credentials"},
        "headers": {"type": "object",
                    "propertyNames": {"pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
                                      "not": {"pattern": "^(?i:host|content-length|transfer-encoding|connection)$"}},
                    "additionalProperties": {"type": "string", "pattern": "^[^\\r\\n]*$"}},
        "body": {},
        "timeout_ms": {"type": "integer", "minimum": 100, "maximum": 30000},
    });
    if rollback {
        properties["rollback"] = http_request(false);
    }
    let mut schema =
        object(&["method", "url"], properties, "an HTTP request; `rollback` is the request that undoes it");
    if !rollback {
        schema.as_object_mut().map(|o| o.remove("$schema"));
    }
    schema
}

/// The payload schema of a built-in type.
pub fn schema(action_type: &str) -> Option<Value> {
    let amount = json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1e12});
    let currency = json!({"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217"});
    Some(match action_type {
        "send_email" => object(
            &["to", "subject"],
            json!({"to": emails(1, 50), "cc": emails(0, 50),
                   "subject": {"type": "string", "minLength": 1, "maxLength": 998, "pattern": "^[^\\r\\n]*\\S[^\\r\\n]*$",
                               "description": "one line, at most 998 bytes"},
                   "text": {"type": "string"}, "html": {"type": "string"}}),
            "an email; give text, html or both",
        ),
        "gmail.flag" | "gmail.archive" | "gmail.mark_read" | "gmail.spam" | "gmail.delete" => {
            object(&["message_id"], json!({"message_id": message_id()}), "one Gmail message")
        }
        "gmail.label" => object(
            &["message_id", "label_ids"],
            json!({"message_id": message_id(),
                   "label_ids": {"type": "array", "minItems": 1, "maxItems": 100,
                                 "items": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f]+$"}}}),
            "labels to add to one Gmail message",
        ),
        "calendar.create_event" => object(
            &["summary", "start", "end"],
            json!({"calendar_id": {"type": "string", "minLength": 1, "maxLength": 1024},
                   "summary": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": "\\S"},
                   "start": {"type": "string", "format": "date-time"},
                   "end": {"type": "string", "format": "date-time", "description": "after start"},
                   "attendees": emails(0, 100),
                   "location": {"type": "string", "maxLength": 8192},
                   "description": {"type": "string", "maxLength": 8192}}),
            "a calendar event (RFC 3339 times; end after start)",
        ),
        "http_request" => http_request(true),
        "make_payment" => object(
            &["amount", "currency", "recipient"],
            json!({"amount": amount, "currency": currency,
                   "recipient": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S"},
                   "reference": {"type": "string"}}),
            "a payment",
        ),
        "make_purchase" => object(
            &["amount", "currency", "item"],
            json!({"amount": amount, "currency": currency,
                   "item": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": "\\S"},
                   "vendor": {"type": "string"},
                   "quantity": {"type": "integer", "minimum": 1, "maximum": 10000}}),
            "a purchase",
        ),
        other => return crate::domain::google_payloads::schema(other),
    })
    .filter(|_| BUILTIN_ACTION_TYPES.contains(&action_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::validate_payload;

    /// Valid and invalid samples of every built-in type: schema and validator agree.
    #[test]
    fn each_built_in_schema_agrees_with_its_validator() {
        let message = json!({"message_id": "m-1"});
        let samples: Vec<(&str, Value, bool)> = vec![
            ("send_email", json!({"to": ["b@example.com"], "subject": "Hi", "text": "t"}), true),
            ("send_email", json!({"to": [], "subject": "Hi", "text": "t"}), false),
            ("send_email", json!({"to": ["b@example.com"], "subject": "a\nb", "text": "t"}), false),
            ("send_email", json!({"to": ["b@example.com"], "subject": "Hi", "text": "t", "bcc": []}), false),
            ("gmail.archive", message.clone(), true),
            ("gmail.delete", json!({"message_id": "no spaces"}), false),
            ("gmail.label", json!({"message_id": "m", "label_ids": ["L1"]}), true),
            ("gmail.label", json!({"message_id": "m", "label_ids": []}), false),
            (
                "calendar.create_event",
                json!({"summary": "S", "start": "2026-03-01T10:00:00Z", "end": "2026-03-01T11:00:00Z"}),
                true,
            ),
            ("calendar.create_event", json!({"summary": "S", "start": "2026-03-01T10:00:00Z"}), false),
            ("http_request", json!({"method": "POST", "url": "https://hooks.example.com/x", "timeout_ms": 500}), true),
            ("http_request", json!({"method": "BREW", "url": "https://hooks.example.com/x"}), false),
            ("http_request", json!({"method": "GET", "url": "https://user:pw@hooks.example.com/x"}), false),
            ("http_request", json!({"method": "GET", "url": "https://h.example.com", "headers": {"Host": "x"}}), false),
            ("http_request", json!({"method": "GET", "url": "https://h.example.com", "headers": {"X-Key": "a"}}), true),
            (
                "http_request",
                json!({"method": "GET", "url": "https://h.example.com", "headers": {"bad name": "a"}}),
                false,
            ),
            ("gmail.label", json!({"message_id": "m", "label_ids": ["a\u{7}b"]}), false),
            ("make_payment", json!({"amount": 1, "currency": "EUR", "recipient": "   "}), false),
            (
                "calendar.create_event",
                json!({"summary": " ", "start": "2026-03-01T10:00:00Z", "end": "2026-03-01T11:00:00Z"}),
                false,
            ),
            ("http_request", json!({"method": "GET", "url": "https://h.example.com", "timeout_ms": 5}), false),
            ("make_payment", json!({"amount": 10.5, "currency": "EUR", "recipient": "ACME"}), true),
            ("make_payment", json!({"amount": -1, "currency": "EUR", "recipient": "ACME"}), false),
            ("make_purchase", json!({"amount": 3, "currency": "usd", "item": "pens"}), false),
            ("make_purchase", json!({"amount": 3, "currency": "USD", "item": "pens", "quantity": 2}), true),
        ];
        for (action_type, payload, valid) in samples {
            let schema = schema(action_type).unwrap();
            let compiled = crate::domain::custom_types::compile(&schema).unwrap();
            assert_eq!(compiled.is_valid(&payload), valid, "schema of {action_type} on {payload}");
            assert_eq!(
                validate_payload(action_type, &payload, "payload").is_ok(),
                valid,
                "validator of {action_type} on {payload}"
            );
        }
        for t in BUILTIN_ACTION_TYPES {
            assert!(schema(t).is_some(), "{t} has a schema");
        }
        assert_eq!(schema("ADD_AFFILIATE_LINK"), None);
    }
}
