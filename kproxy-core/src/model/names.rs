//! Names and small enums shared by every layer.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Namespace and name of a namespaced object; prints as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectRef {
    /// A reference to `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

impl ObjectRef {
    /// `namespace/name` for logs and error messages: like `Display`, but with control
    /// and bidirectional-formatting characters escaped (see [`Escaped`]), so a hostile
    /// name can neither split a log line nor reorder what a terminal shows.
    pub fn escaped(&self) -> EscapedRef<'_> {
        EscapedRef(self)
    }
}

/// [`ObjectRef::escaped`]'s display.
#[derive(Debug, Clone, Copy)]
pub struct EscapedRef<'a>(&'a ObjectRef);

impl fmt::Display for EscapedRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.namespace.is_empty() {
            Escaped(&self.0.name).fmt(f)
        } else {
            write!(
                f,
                "{}/{}",
                Escaped(&self.0.namespace),
                Escaped(&self.0.name)
            )
        }
    }
}

/// Displays a string from the API with the characters that could forge or hide text
/// escaped Rust-style (`\n`, `\u{202e}`), and backslashes doubled so the escaping is
/// unambiguous. Every other character, including the whole of a valid Kubernetes name,
/// prints as it is.
///
/// ```
/// use kproxy_core::model::Escaped;
///
/// assert_eq!(Escaped("web").to_string(), "web");
/// assert_eq!(Escaped("a\nINFO forged").to_string(), "a\\nINFO forged");
/// assert_eq!(Escaped("\u{202e}evil").to_string(), "\\u{202e}evil");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for c in self.0.chars() {
            if needs_escape(c) {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Control characters (C0, DEL, C1), the backslash, and the Unicode format characters
/// that change how text around them is shown (bidi controls, zero-width characters).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// The kinds of object kproxy reads, for error messages and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// core/v1 Endpoints (legacy; converted into an EndpointSlice).
    Endpoints,
    /// core/v1 Node.
    Node,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Service => "service",
            ObjectKind::EndpointSlice => "endpointslice",
            ObjectKind::Endpoints => "endpoints",
            ObjectKind::Node => "node",
        })
    }
}

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP (the API default).
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`); anything else is `None`.
    pub fn from_api(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The API spelling: `TCP`, `UDP` or `SCTP`.
    pub fn as_api(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Lower-case name as iptables, conntrack and upstream's chain hash use it.
    pub fn as_lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Whether the kernel keeps conntrack entries for this protocol that outlive an
    /// endpoint (UDP and SCTP), so a removed endpoint needs its flows deleted.
    pub fn needs_conntrack_cleanup(self) -> bool {
        matches!(self, Protocol::Udp | Protocol::Sctp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_api())
    }
}

/// An IP family. kproxy keeps one service map per family, as upstream runs one proxier
/// per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    #[serde(rename = "IPv4")]
    V4,
    /// IPv6.
    #[serde(rename = "IPv6")]
    V6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of an address.
    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// Parses the API spelling (`IPv4`, `IPv6`).
    pub fn from_api(s: &str) -> Option<IpFamily> {
        match s {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }

    /// The API spelling: `IPv4` or `IPv6` (also the `ip_family` metric label).
    pub fn as_api(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_api())
    }
}

/// One port of one Service: `namespace/name:port-name` plus the protocol, upstream's
/// `ServicePortName`. The key of the [`ServiceMap`](crate::ServiceMap).
///
/// ```
/// use kproxy_core::model::{ObjectRef, Protocol, ServicePortName};
/// let spn = ServicePortName::new(ObjectRef::new("default", "web"), "http", Protocol::Tcp);
/// assert_eq!(spn.to_string(), "default/web:http");
/// let unnamed = ServicePortName::new(ObjectRef::new("default", "dns"), "", Protocol::Udp);
/// assert_eq!(unnamed.to_string(), "default/dns");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePortName {
    /// The Service.
    pub service: ObjectRef,
    /// The port's name; empty for a single unnamed port.
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// The port `port` (a name, possibly empty) of `service`.
    pub fn new(service: ObjectRef, port: impl Into<String>, protocol: Protocol) -> Self {
        ServicePortName {
            service,
            port: port.into(),
            protocol,
        }
    }
}

impl fmt::Display for ServicePortName {
    /// `ns/name:port`, or `ns/name` for an unnamed port, as upstream prints it in rule
    /// comments.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

impl ServicePortName {
    /// `ns/name:port` for logs and listings, with the names escaped as in
    /// [`ObjectRef::escaped`].
    pub fn escaped(&self) -> EscapedPortName<'_> {
        EscapedPortName(self)
    }
}

/// [`ServicePortName::escaped`]'s display.
#[derive(Debug, Clone, Copy)]
pub struct EscapedPortName<'a>(&'a ServicePortName);

impl fmt::Display for EscapedPortName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.port.is_empty() {
            write!(f, "{}", self.0.service.escaped())
        } else {
            write!(f, "{}:{}", self.0.service.escaped(), Escaped(&self.0.port))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Undoes [`Escaped`] for the characters it escapes; what a reader of the log can do.
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('0') => out.push('\0'),
                Some('\\') => out.push('\\'),
                Some('u') => {
                    let hex: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                    let code = u32::from_str_radix(&hex, 16).expect("escape_debug writes hex");
                    out.push(char::from_u32(code).expect("escape_debug writes a char"));
                }
                other => panic!("unknown escape {other:?} in {s:?}"),
            }
        }
        out
    }

    proptest! {
        /// Whatever the name, its escaped form has no control or bidi character, and
        /// it can be read back: two different names never print the same.
        #[test]
        fn escaped_names_are_one_line_and_reversible(ns in any::<String>(), name in any::<String>(), port in any::<String>()) {
            let text = Escaped(&name).to_string();
            prop_assert!(!text.chars().any(needs_escape_except_backslash), "{text:?}");
            prop_assert_eq!(unescape(&text), name.clone());
            let spn = ServicePortName::new(ObjectRef::new(ns, name), port, Protocol::Tcp);
            prop_assert!(!spn.escaped().to_string().chars().any(char::is_control));
        }
    }

    fn needs_escape_except_backslash(c: char) -> bool {
        c != '\\' && needs_escape(c)
    }

    #[test]
    fn valid_names_print_unchanged() {
        let spn = ServicePortName::new(
            ObjectRef::new("kube-system", "kube-dns"),
            "dns-tcp",
            Protocol::Tcp,
        );
        assert_eq!(spn.escaped().to_string(), spn.to_string());
        assert_eq!(spn.service.escaped().to_string(), "kube-system/kube-dns");
    }
}
