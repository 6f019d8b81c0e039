//! A request field that is wrong, named by its JSON path, and why.

/// What is wrong with one field of a request (`payload.to[1]`, `steps[2].wait_for`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// Too large rather than malformed (maps to 413).
    pub too_large: bool,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into(), too_large: false }
    }
}
