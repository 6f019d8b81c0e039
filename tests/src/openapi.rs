//! The API's contract (`openapi/openapi.json`) as the end-to-end tests hold the code to it:
//! every answer of a documented route must have a status the operation lists and a JSON body
//! its schema accepts.

use serde_json::Value;
use std::sync::LazyLock;

/// The document, parsed once.
pub fn document() -> &'static Value {
    static DOC: LazyLock<Value> = LazyLock::new(|| {
        serde_json::from_str(actiongate::entry::api_intake::OPENAPI).expect("openapi/openapi.json is JSON")
    });
    &DOC
}

/// The documented path template matching `path` (query left out), e.g. `/actions/{id}`.
pub fn template_of(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let paths = document()["paths"].as_object()?;
    // A literal segment wins over a parameter (`/admin/integrations` over `/admin/{x}`).
    let mut best: Option<(usize, &String)> = None;
    for template in paths.keys() {
        let t: Vec<&str> = template.trim_matches('/').split('/').collect();
        if t.len() != parts.len() {
            continue;
        }
        let mut literal = 0;
        let fits = t.iter().zip(&parts).all(|(a, b)| {
            if a.starts_with('{') && a.ends_with('}') {
                !b.is_empty()
            } else {
                literal += 1;
                a == b
            }
        });
        if fits && best.is_none_or(|(n, _)| literal > n) {
            best = Some((literal, template));
        }
    }
    best.map(|(_, t)| t.clone())
}

/// Checks one answer against the contract; `Ok` for routes the document does not cover
/// (the local stack's own, the fakes).
pub fn check(method: &str, path: &str, status: u16, content_type: Option<&str>, body: &Value) -> Result<(), String> {
    let Some(template) = template_of(path) else {
        return Ok(());
    };
    let doc = document();
    let operation = &doc["paths"][&template][method.to_ascii_lowercase()];
    if operation.is_null() {
        // A method the route does not serve is refused (API Gateway: 404; an ANY route: 405).
        return if status == 404 || status == 405 {
            Ok(())
        } else {
            Err(format!("{method} {template} is not in the OpenAPI document (answered {status})"))
        };
    }
    let responses = &operation["responses"];
    let response = [status.to_string(), format!("{}XX", status / 100), "default".to_owned()]
        .iter()
        .map(|k| &responses[k])
        .find(|r| !r.is_null())
        .ok_or_else(|| format!("{method} {template} answered {status}, which the document does not list"))?;
    let response = resolve(response);
    let json = content_type.is_some_and(|c| c.starts_with("application/json"));
    let Some(content) = response["content"].as_object() else {
        return Ok(());
    };
    if !json {
        if content.keys().any(|k| content_type.is_some_and(|c| c.starts_with(k.as_str()))) || method == "HEAD" {
            return Ok(());
        }
        return Err(format!("{method} {template} {status}: content type {content_type:?} is not documented"));
    }
    let Some(schema) = content.get("application/json").map(|c| &c["schema"]) else {
        return Err(format!("{method} {template} {status}: JSON is not documented"));
    };
    let mut rooted = schema.clone();
    if let Some(object) = rooted.as_object_mut() {
        object.insert("components".into(), doc["components"].clone());
    }
    let validator =
        jsonschema::draft202012::new(&rooted).map_err(|e| format!("{method} {template} {status}: schema: {e}"))?;
    let errors: Vec<String> =
        validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).take(5).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{method} {template} {status}: the body does not match the document: {errors:?}\nbody: {body}"))
    }
}

/// A response object, following one `$ref` to `components/responses`.
fn resolve(response: &Value) -> &Value {
    match response["$ref"].as_str().and_then(|r| r.strip_prefix("#/")) {
        Some(pointer) => document().pointer(&format!("/{pointer}")).unwrap_or(response),
        None => response,
    }
}
