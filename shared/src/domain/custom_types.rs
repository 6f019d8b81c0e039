//! Action types a policy declares besides the built-in ones: a name, a tier and the other
//! rules, a `description`, and optionally a JSON Schema (draft 2020-12) for the payload. A
//! payload of such a type is checked against its schema at intake; an error names the JSON path
//! of what is wrong (`payload.links[2].url`, `steps[1].payload.page`).

use crate::domain::field_error::FieldError;
use jsonschema::Validator;
use serde_json::Value;
use std::collections::BTreeMap;

/// The longest name a declared type may have.
pub const MAX_NAME_CHARS: usize = 64;
/// The largest declared schema (serialized) and its deepest nesting.
pub const MAX_SCHEMA_BYTES: usize = 16 * 1024;
pub const MAX_SCHEMA_DEPTH: usize = 16;
/// The longest error message a schema check reports (the library's can repeat the payload).
const MAX_MESSAGE_CHARS: usize = 300;

/// `[A-Za-z0-9_.:-]{1,64}`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

/// Why `name` may not be declared besides `builtin` names: `plan` (what a plan is called), a
/// built-in name in other case, or one so close to a built-in name that it is likely a typo
/// (`make_paymnet`), which would otherwise become a type of its own silently.
pub fn reserved(name: &str, builtin: &[&str]) -> Option<String> {
    if name.eq_ignore_ascii_case(crate::domain::action::PLAN_ACTION_TYPE) {
        return Some("`plan` names plans".into());
    }
    builtin
        .iter()
        .find(|b| {
            b.eq_ignore_ascii_case(name) || edit_distance(&b.to_ascii_lowercase(), &name.to_ascii_lowercase()) <= 2
        })
        .map(|b| format!("too close to the built-in type `{b}` (a typo?)"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Keywords a declared schema may not use: references (a recursive schema can make a check
/// take exponential time; a schema is self-contained and small instead).
const REFUSED_KEYWORDS: &[&str] = &["$ref", "$dynamicRef", "$recursiveRef"];

fn depth_and_refs(v: &serde_json::Value, depth: usize) -> Result<(), String> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(format!("nests deeper than {MAX_SCHEMA_DEPTH} levels"));
    }
    match v {
        serde_json::Value::Object(map) => {
            if let Some(k) = REFUSED_KEYWORDS.iter().find(|k| map.contains_key(**k)) {
                return Err(format!("`{k}` is not allowed: a declared schema is self-contained"));
            }
            map.values().try_for_each(|child| depth_and_refs(child, depth + 1))
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(|child| depth_and_refs(child, depth + 1)),
        _ => Ok(()),
    }
}

/// A payload schema, compiled; why not, in a sentence. `pattern`s run on the linear-time
/// `regex` engine (no backtracking: a pattern cannot make a payload's check slow; one that
/// needs look-around is refused) with a bounded compiled size.
pub fn compile(schema: &Value) -> Result<Validator, String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("must be a JSON Schema object".into());
    }
    if serde_json::to_vec(schema).map_or(usize::MAX, |b| b.len()) > MAX_SCHEMA_BYTES {
        return Err(format!("is larger than {MAX_SCHEMA_BYTES} bytes"));
    }
    depth_and_refs(schema, 0)?;
    jsonschema::draft202012::options()
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(64 * 1024).dfa_size_limit(1 << 20))
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// The declared types' payload rules, compiled from a policy.
#[derive(Default)]
pub struct CustomTypes {
    /// Type name → its compiled schema (`None`: any JSON object).
    types: BTreeMap<String, Option<Validator>>,
    /// The names an unknown-type error may list (not the blocked ones).
    listed: Vec<String>,
}

impl CustomTypes {
    /// Compiles the schemas of `types` (name, schema, whether it may be listed to callers);
    /// the first that does not compile is the error, with the type's name.
    pub fn compile<'a>(types: impl IntoIterator<Item = (&'a String, Option<&'a Value>, bool)>) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        let mut listed = Vec::new();
        for (name, schema, shown) in types {
            let validator = schema.map(compile).transpose().map_err(|e| format!("types.{name}.schema: {e}"))?;
            out.insert(name.clone(), validator);
            if shown {
                listed.push(name.clone());
            }
        }
        Ok(Self { types: out, listed })
    }

    /// The names an unknown-type error lists (at most 20).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.listed.iter().take(20).map(String::as_str)
    }

    /// Checks a payload of `action_type` found at `path` (`payload`, `steps[2].payload`):
    /// `None` when the type is not one of these.
    pub fn check(&self, action_type: &str, payload: &Value, path: &str) -> Option<Result<(), FieldError>> {
        let validator = self.types.get(action_type)?;
        Some(match validator {
            None if !payload.is_object() => Err(FieldError::new(path, "must be a JSON object")),
            None => Ok(()),
            Some(v) => match v.iter_errors(payload).next() {
                None => Ok(()),
                Some(e) => {
                    let mut message: String = e.to_string().chars().take(MAX_MESSAGE_CHARS).collect();
                    if message.chars().count() == MAX_MESSAGE_CHARS {
                        message.push('…');
                    }
                    Err(FieldError::new(field_of(path, e.instance_path().as_str()), message))
                }
            },
        })
    }
}

/// `payload` + `/links/2/url` → `payload.links[2].url` (JSON pointer escapes undone).
fn field_of(base: &str, pointer: &str) -> String {
    let mut field = base.to_owned();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit()) {
            field.push_str(&format!("[{segment}]"));
        } else {
            field.push('.');
            field.push_str(&segment);
        }
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_short_and_plain() {
        for ok in ["ADD_AFFILIATE_LINK", "crm:add-tag", "jira.create_task", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "has space", "slash/name", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn payloads_are_checked_against_their_schema_and_errors_name_the_path() {
        let schema = json!({
            "type": "object",
            "required": ["page", "links"],
            "properties": {
                "page": {"type": "string", "format": "uri"},
                "links": {"type": "array", "items": {"type": "object", "required": ["url"],
                    "properties": {"url": {"type": "string", "pattern": "^https://"}}}}
            },
            "additionalProperties": false
        });
        let name = "ADD_AFFILIATE_LINK".to_owned();
        let types = CustomTypes::compile([(&name, Some(&schema), true)]).unwrap();
        let good = json!({"page": "https://blog.example.com/a", "links": [{"url": "https://shop.example.com/x"}]});
        assert_eq!(types.check(&name, &good, "payload"), Some(Ok(())));
        let bad = json!({"page": "https://blog.example.com/a", "links": [{"url": "https://ok"}, {"url": "http://no"}]});
        let err = types.check(&name, &bad, "steps[1].payload").unwrap().unwrap_err();
        assert_eq!(err.field, "steps[1].payload.links[1].url", "{err:?}");
        let missing = types.check(&name, &json!({"page": "https://x"}), "payload").unwrap().unwrap_err();
        assert_eq!(missing.field, "payload", "{missing:?}");
        assert!(missing.message.contains("links"), "{missing:?}");
        assert_eq!(types.check("send_email", &good, "payload"), None, "not a declared type");
    }

    #[test]
    fn a_pattern_cannot_make_a_check_slow() {
        let name = "SLOW".to_owned();
        let schema = json!({"type": "string", "pattern": "^(a+)+$"});
        let types = CustomTypes::compile([(&name, Some(&schema), true)]).unwrap();
        // On a backtracking engine this input takes exponential time; on `regex` it is linear
        // (the test would not finish otherwise).
        let evil = Value::String("a".repeat(60_000) + "!");
        assert!(types.check(&name, &evil, "payload").unwrap().is_err());
    }

    #[test]
    fn formats_are_checked_and_long_messages_are_cut() {
        let name = "MAIL".to_owned();
        let schema = json!({"type": "object", "properties": {"to": {"type": "string", "format": "email"}}});
        let types = CustomTypes::compile([(&name, Some(&schema), true)]).unwrap();
        assert!(types.check(&name, &json!({"to": "a@example.com"}), "payload").unwrap().is_ok());
        assert_eq!(types.check(&name, &json!({"to": "not mail"}), "payload").unwrap().unwrap_err().field, "payload.to");
        let strict =
            CustomTypes::compile([(&name, Some(&json!({"type": "object", "maxProperties": 0})), true)]).unwrap();
        let big = json!({"x": "y".repeat(10_000)});
        let err = strict.check(&name, &big, "payload").unwrap().unwrap_err();
        assert!(err.message.chars().count() <= 301, "{}", err.message.len());
    }

    #[test]
    fn blocked_types_are_not_listed() {
        let (shown, hidden) = ("SHOWN".to_owned(), "HIDDEN".to_owned());
        let types = CustomTypes::compile([(&shown, None, true), (&hidden, None, false)]).unwrap();
        assert_eq!(types.names().collect::<Vec<_>>(), vec!["SHOWN"]);
        assert!(types.check(&hidden, &json!({}), "payload").is_some(), "still checked (then blocked by the policy)");
    }

    #[test]
    fn a_type_without_a_schema_takes_any_object() {
        let name = "NOTE".to_owned();
        let types = CustomTypes::compile([(&name, None, true)]).unwrap();
        assert_eq!(types.check(&name, &json!({"anything": [1, 2]}), "payload"), Some(Ok(())));
        assert!(types.check(&name, &json!([1]), "payload").unwrap().is_err());
    }

    #[test]
    fn a_schema_that_does_not_compile_is_refused_with_its_type() {
        let name = "BROKEN".to_owned();
        let schema = json!({"type": "no-such-type"});
        let err = CustomTypes::compile([(&name, Some(&schema), true)]).err().unwrap();
        assert!(err.starts_with("types.BROKEN.schema:"), "{err}");
        assert!(compile(&json!("a string")).is_err());
        // Look-around needs backtracking: refused.
        assert!(compile(&json!({"type": "string", "pattern": "^(?=a)a$"})).is_err());
        // Remote references are not fetched: a schema is self-contained.
        assert!(compile(&json!({"$ref": "https://example.com/schema.json"})).is_err());
    }
}
