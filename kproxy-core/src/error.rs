//! The one error type of `kproxy-core`.
//!
//! Every variant names what was wrong: the object (kind, namespace/name) and the field, or
//! the config field. Messages are lowercase with no full stop, and never repeat their
//! `#[source]`, so a chained report does not say the same thing twice.

use std::fmt;

use crate::model::{ObjectKind, ObjectRef};

/// Why an object, the config, or a backend sync could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes object has a field kproxy cannot use; the object is skipped, the rest
    /// of the snapshot is still used.
    #[error("{kind} {}: {field}: {reason}", .obj.escaped())]
    InvalidObject {
        /// What kind of object (Service, EndpointSlice, ...).
        kind: ObjectKind,
        /// Namespace and name of the object.
        obj: ObjectRef,
        /// The field path, as in the API (`spec.ports[0].protocol`).
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A document of a snapshot (YAML or JSON holding Kubernetes objects) could not be
    /// read at all, or is not a Kubernetes object.
    #[error("document {index}: {reason}")]
    InvalidDocument {
        /// 1-based position of the document in its file (multi-document YAML, or items of
        /// a `kind: List`).
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The config document is not valid YAML/JSON or does not have the config's shape
    /// (wrong type, unknown field, duplicate field).
    #[error("config: {reason}")]
    ConfigSyntax {
        /// The parser's explanation, with the field path where known.
        reason: String,
    },
    /// The config parsed but breaks upstream's validation rules.
    #[error("config: {errors}")]
    InvalidConfig {
        /// Every rule that failed, each naming its field.
        errors: FieldErrors,
    },
    /// A backend failed to apply a sync; the last good rules stay in place.
    #[error("{mode} sync failed")]
    Backend {
        /// The proxy mode of the backend ("iptables", "ipvs", "userspace", ...).
        mode: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One failed validation rule: a config field and why its value is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path in the config document, e.g. `iptables.masqueradeBit`.
    pub field: String,
    /// Why the value is rejected.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// All the validation failures of one config, in field order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
