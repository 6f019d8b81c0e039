//! The built-in action types' payloads as JSON Schema (draft 2020-12), for agents that turn
//! action types into tool definitions (`GET /action-types`). The built-in validators
//! (`validation::validate_payload`) stay the rule; a test holds the two together on valid and
//! invalid samples of every type and a differential property test on generated payloads. The
//! rules a schema cannot say (an end after its start, an address's local part of at most 64
//! characters) are in the descriptions.

use crate::domain::schema_parts::{emails, optional_nullable};
use crate::domain::validation::BUILTIN_ACTION_TYPES;
use serde_json::{json, Value};

fn message_id() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,256}$", "description": "a Gmail message id"})
}

fn object(required: &[&str], properties: Value, description: &str) -> Value {
    json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
           "required": required, "properties": optional_nullable(required, properties), "additionalProperties": false,
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
        "send_email" => {
            let mut email = object(
                &["to", "subject"],
                json!({"to": emails(1, 50), "cc": emails(0, 50),
                       "subject": {"type": "string", "minLength": 1, "maxLength": 998, "pattern": "^[^\\r\\n]*\\S[^\\r\\n]*$",
                                   "description": "one line, at most 998 characters"},
                       "text": {"type": "string"}, "html": {"type": "string"}}),
                "an email; give text, html or both",
            );
            email["anyOf"] = json!([
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
                {"required": ["html"], "properties": {"html": {"type": "string"}}}
            ]);
            email
        }
        "gmail.flag" | "gmail.archive" | "gmail.mark_read" | "gmail.spam" | "gmail.delete" => {
            object(&["message_id"], json!({"message_id": message_id()}), "one Gmail message")
        }
        "gmail.label" => object(
            &["message_id", "label_ids"],
            json!({"message_id": message_id(),
                   "label_ids": {"type": "array", "minItems": 1, "maxItems": 100,
                                 "items": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$"}}}),
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

    mod differential {
        use super::super::schema;
        use crate::domain::validation::validate_payload;
        use proptest::prelude::*;
        use serde_json::{json, Value};

        /// One valid payload of each type, and the fields a mutation may touch (its own and
        /// its optional ones, plus one that no type has).
        fn bases() -> Vec<(&'static str, Value, Vec<&'static str>)> {
            vec![
                (
                    "send_email",
                    json!({"to": ["b@example.com"], "subject": "Hi", "text": "t"}),
                    vec!["to", "cc", "subject", "text", "html"],
                ),
                ("gmail.label", json!({"message_id": "m-1", "label_ids": ["L1"]}), vec!["message_id", "label_ids"]),
                ("gmail.archive", json!({"message_id": "m-1"}), vec!["message_id"]),
                (
                    "calendar.create_event",
                    json!({"summary": "S", "start": "2026-03-01T10:00:00Z", "end": "2026-03-01T11:00:00Z"}),
                    vec!["summary", "calendar_id", "attendees", "location", "description"],
                ),
                (
                    "make_payment",
                    json!({"amount": 10, "currency": "EUR", "recipient": "ACME"}),
                    vec!["amount", "currency", "recipient", "reference"],
                ),
                (
                    "make_purchase",
                    json!({"amount": 3, "currency": "USD", "item": "pens"}),
                    vec!["amount", "currency", "item", "vendor", "quantity"],
                ),
                ("gmail.reply", json!({"message_id": "m-1", "text": "ok"}), vec!["message_id", "text", "html", "cc"]),
                (
                    "gmail.forward",
                    json!({"message_id": "m-1", "to": ["a@example.com"]}),
                    vec!["message_id", "to", "text"],
                ),
                ("drive.move_file", json!({"file_id": "f1", "to_folder_id": "d1"}), vec!["file_id", "to_folder_id"]),
                ("docs.create_document", json!({"title": "Notes"}), vec!["title", "text"]),
                ("tasks.create", json!({"title": "Call"}), vec!["title", "notes"]),
            ]
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[ -~]{0,12}",
                "\\PC{0,8}",
                "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}a-z]{1,6}",
                "[ \\t\\n\\r]{0,3}[a-z]{0,3}[ \\t\\n\\r]{0,3}",
                // Lengths at the limits, in characters of two bytes each.
                prop::sample::select(vec![255usize, 256, 257, 997, 998, 999, 1023, 1024, 1025])
                    .prop_map(|n| "é".repeat(n)),
            ]
        }

        fn email() -> impl Strategy<Value = String> {
            let local = prop_oneof![
                "[a-z0-9]{1,8}",
                "[a-z]{1,3}\\.[a-z]{1,3}",
                "\\.[a-z]{1,3}",
                "[a-z]{1,3}\\.",
                "[a-z]{1,2}\\.\\.[a-z]{1,2}",
                "[!#$%&'*+/=?^_`{|}~-]{1,3}",
                "[a-zé]{1,3}",
                "[a-z ]{1,4}",
                "[a-z\"(),:;<>\\[\\]]{1,3}",
            ];
            let domain = prop_oneof![
                "[a-z0-9]{1,6}\\.[a-z]{2,4}",
                "[a-z]{1,4}",
                "-[a-z]{1,3}\\.com",
                "[a-z]{1,3}-\\.com",
                "[a-z_]{1,4}\\.com",
                "[a-z]{1,3}\\.\\.com",
                "[A-Z]{1,3}\\.COM",
                "[a-z]{1,2}\\.[a-z]{62,64}",
                "[a-z0-9-]{1,5}\\.[a-z0-9-]{1,5}",
            ];
            (local, domain, prop_oneof!["@", "@@", ""], prop_oneof!["", " "])
                .prop_map(|(l, d, at, pad)| format!("{pad}{l}{at}{d}{pad}"))
        }

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                text().prop_map(Value::String),
                email().prop_map(Value::String),
                prop::collection::vec(email().prop_map(Value::String), 0..3).prop_map(Value::Array),
                prop::collection::vec(text().prop_map(Value::String), 0..3).prop_map(Value::Array),
                any::<i32>().prop_map(|n| json!(n)),
                (-1e13f64..1e13).prop_map(|n| json!(n)),
                Just(json!(0)),
                Just(Value::Null),
                Just(json!(true)),
                Just(json!({})),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// The published schema and the validator agree on every generated payload: one
            /// field of a valid payload replaced (or added, or an address in a list replaced).
            #[test]
            fn schemas_and_validators_agree_on_generated_payloads(
                pick in 0usize..11,
                field_pick in 0usize..8,
                new in value(),
                into_list in any::<bool>(),
                address in email(),
            ) {
                let (action_type, base, fields) = bases().swap_remove(pick);
                let field = *fields.get(field_pick).unwrap_or(&"bogus");
                let mut payload = base.clone();
                match (&mut payload[field], into_list) {
                    (Value::Array(items), true) if !items.is_empty() => items[0] = Value::String(address),
                    (slot, _) => *slot = new,
                }
                let compiled = crate::domain::custom_types::compile(&schema(action_type).unwrap()).unwrap();
                let by_schema = compiled.is_valid(&payload);
                let by_validator = validate_payload(action_type, &payload, "payload").is_ok();
                prop_assert_eq!(by_schema, by_validator, "{} on {}", action_type, payload);
            }
        }
    }
}
