//! The one error type of configuration checks: which field is wrong and why. Each settings
//! section and each policy validates itself and answers with a [`FieldError`]; the caller
//! that knows where the section sits (a destination, `isolation.breaker`) adds the prefix.

use std::fmt;

/// A field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name within its section.
    pub field: &'static str,
    /// What is wrong, as a phrase that follows the field's name ("must be at least 1").
    pub problem: String,
}

impl FieldError {
    /// `field` `problem`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        FieldError {
            field,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.problem)
    }
}

impl std::error::Error for FieldError {}
