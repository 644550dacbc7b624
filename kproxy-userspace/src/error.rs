//! The crate's one error type.

use std::net::SocketAddr;

use kproxy_core::model::IpFamily;

/// Why the userspace proxy could not pick an endpoint, open a socket or load its rules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `bindAddress` is a loopback address: REDIRECT cannot reach it (upstream refuses it
    /// too, `pkg/proxy/userspace/proxier.go` `createProxier`).
    #[error("cannot proxy on localhost")]
    LoopbackBind,
    /// `bindAddress` does not parse as an IP address.
    #[error("bindAddress {0:?} is not an IP address")]
    BadBindAddress(String),
    /// `portRange` does not parse.
    #[error("portRange {value:?}: {reason}")]
    BadPortRange {
        /// The configured value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The balancer has no endpoints for the service port (upstream `missing endpoints`).
    #[error("missing endpoints")]
    NoEndpoints,
    /// Every dial attempt failed.
    #[error("{service}: no endpoint reachable after {attempts} attempts")]
    DialFailed {
        /// The service port.
        service: String,
        /// Attempts made.
        attempts: usize,
    },
    /// Every port of `portRange` is taken (upstream's port allocator message).
    #[error(
        "port allocation failed; there are no remaining ports left to allocate in the accepted range"
    )]
    PortsExhausted,
    /// A proxy socket could not be opened.
    #[error("{service}: opening {protocol} socket on {addr}")]
    Listen {
        /// The service port (`namespace/name:port`).
        service: String,
        /// `TCP` or `UDP`.
        protocol: &'static str,
        /// The address it tried to bind.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// `iptables-restore` or `iptables-save` failed.
    #[error("{family}: iptables")]
    Iptables {
        /// The family whose tool failed.
        family: IpFamily,
        /// The executor's error.
        #[source]
        source: kproxy_iptables::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for kproxy_core::Error {
    fn from(e: Error) -> Self {
        kproxy_core::Error::Backend {
            mode: "userspace",
            source: Box::new(e),
        }
    }
}
