//! The crate's one error type.

use std::net::IpAddr;

use kproxy_core::model::IpFamily;

/// Everything that can go wrong in the IPVS backend. Messages are lowercase and never
/// repeat their `#[source]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A netlink attribute had a value the codec cannot read.
    #[error("{attr}: {reason}")]
    BadAttribute {
        /// The kernel's name of the attribute (`IPVS_SVC_ATTR_PORT`, …).
        attr: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A message from the kernel could not be decoded.
    #[error("cannot decode ipvs message")]
    Decode(#[source] netlink_packet_core::DecodeError),
    /// A kernel message lacked an attribute the codec needs.
    #[error("{what}: missing attribute {attr}")]
    MissingAttribute {
        /// The object being decoded (`service`, `destination`).
        what: &'static str,
        /// The kernel's name of the missing attribute.
        attr: &'static str,
    },
    /// The generic netlink socket or family lookup failed.
    #[error("ipvs netlink {op}")]
    Netlink {
        /// The operation (`resolve family`, `request`, …).
        op: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The kernel answered a request with an error.
    #[error("ipvs {op}: kernel said")]
    Kernel {
        /// The operation (`add service 10.96.0.10:80/TCP`, …).
        op: String,
        /// The errno the kernel returned.
        #[source]
        source: std::io::Error,
    },
    /// rtnetlink (the kube-ipvs0 link and its addresses) failed.
    #[error("{op}")]
    Link {
        /// What was being done (`add address 10.96.0.10 to kube-ipvs0`, …).
        op: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A helper program (`ipset`, `iptables-restore`, `conntrack`) could not be run.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A helper program exited with a failure.
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        /// The program and its main arguments.
        program: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// A configuration value is unusable for the IPVS backend.
    #[error("config {field}: {reason}")]
    Config {
        /// The field (`ipvs.excludeCIDRs[0]`, …).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A family was asked for that this proxier does not serve.
    #[error("address {addr} is not {family}")]
    WrongFamily {
        /// The address.
        addr: IpAddr,
        /// The proxier's family.
        family: IpFamily,
    },
    /// Injected by the recording executor in tests.
    #[error("injected failure: {0}")]
    Injected(String),
}

impl From<netlink_packet_core::DecodeError> for Error {
    fn from(e: netlink_packet_core::DecodeError) -> Self {
        Error::Decode(e)
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
