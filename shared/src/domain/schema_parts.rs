//! Pieces the built-in types' JSON Schemas share (`builtin_schemas`, `google_payloads`): a
//! leaf, so neither needs the other.

use serde_json::{json, Value};

/// An address as `EmailAddress::parse` takes one (its local part is also at most 64
/// characters, which a linear-time pattern cannot say; it is in the description).
pub const EMAIL_PATTERN: &str = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$";

/// A list of `min` to `max` addresses.
pub fn emails(min: usize, max: usize) -> Value {
    json!({"type": "array", "minItems": min, "maxItems": max,
           "items": {"type": "string", "pattern": EMAIL_PATTERN, "maxLength": 254,
                     "description": "an email address (its local part at most 64 characters)"}})
}

/// The validators read an optional field that is `null` as absent: so do the schemas.
pub fn optional_nullable(required: &[&str], mut properties: Value) -> Value {
    if let Some(map) = properties.as_object_mut() {
        for (name, prop) in map.iter_mut() {
            if required.contains(&name.as_str()) {
                continue;
            }
            match prop.get_mut("type") {
                Some(Value::String(t)) => {
                    *prop.get_mut("type").unwrap_or(&mut Value::Null) = json!([t.clone(), "null"])
                }
                Some(Value::Array(types)) => types.push(json!("null")),
                _ => {
                    if let Some(Value::Array(options)) = prop.get_mut("enum") {
                        options.push(Value::Null);
                    }
                }
            }
        }
    }
    properties
}
