//! The one error type of the `kproxy` binary.
//!
//! Messages are lowercase, without a full stop, and never repeat their `#[source]`:
//! `main` prints the chain once, joined with `: `.

use std::path::PathBuf;

/// Why `kproxy` could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read.
    #[error("{}: cannot read", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file or the flags give a config kproxy must refuse.
    #[error("{}", match path { Some(p) => format!("{}", p.display()), None => "flags".to_owned() })]
    Config {
        /// The config file, or `None` when the flags alone are at fault.
        path: Option<PathBuf>,
        /// Which rule failed (boxed: core's error is large).
        #[source]
        source: Box<kproxy_core::Error>,
    },
    /// A flag value that clap could not check on its own.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag, with its dashes (`--feature-gates`).
        flag: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// The node name could not be found: no `--hostname-override`, no
    /// `hostnameOverride`, and the host name is unreadable or blank.
    #[error("cannot determine the node name; set --hostname-override")]
    NodeName,
    /// The proxy mode names a backend this binary was built without.
    #[error("backend {0} not available in this build")]
    BackendUnavailable(&'static str),
    /// A backend failed (sync or cleanup).
    #[error("{mode}")]
    Backend {
        /// The proxy mode.
        mode: &'static str,
        /// The backend's error.
        #[source]
        source: Box<kproxy_core::Error>,
    },
    /// The process lacks a Linux capability the mode needs.
    #[error("{what} needs {cap}, which this process does not have (see docs/least-privilege.md)")]
    Capability {
        /// The proxy mode, or `cleanup`.
        what: &'static str,
        /// The capability (`CAP_NET_ADMIN`).
        cap: &'static str,
    },
    /// A backend could not be set up (bad config for it, missing tools).
    #[error("cannot start the {mode} backend")]
    BackendStart {
        /// The proxy mode.
        mode: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A backend could not render its plan for `kproxy plan`.
    #[error("{mode} plan")]
    BackendPlan {
        /// The proxy mode.
        mode: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// `kproxy trace` could not follow the packet through the planned rules.
    #[error("cannot trace the packet")]
    Trace(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Output could not be encoded as JSON or YAML.
    #[error("cannot encode the output as {format}: {reason}")]
    Encode {
        /// `json` or `yaml`.
        format: &'static str,
        /// The encoder's explanation.
        reason: String,
    },
    /// The Kubernetes client could not be set up.
    #[error("kubernetes client")]
    Kube(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A sysctl could not be set (conntrack with `--init-only`, `route_localnet`).
    #[error("sysctl")]
    Sysctl(#[source] crate::conntrack::SysctlError),
    /// The async runtime could not start (threads, epoll).
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The config file changed: kproxy exits so that it is restarted with the new
    /// content, as upstream.
    #[error("{}: content of the proxy server's configuration file was updated", .0.display())]
    ConfigChanged(PathBuf),
    /// A listener (healthz, metrics, health check node port) could not be bound or failed.
    #[error("{what} on {addr}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// The address it listens on.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// `value`'s `Display` on one line: control characters (a newline in an object name
/// from the API, an escape sequence) are written escaped, as `{:?}` would, so that a log
/// line cannot be split or forged. Everything else is kept as is.
pub fn one_line(value: &impl std::fmt::Display) -> String {
    let text = value.to_string();
    if !text.chars().any(char::is_control) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// An error and its sources, joined with `: `, on one line ([`one_line`]): for errors
/// of other crates (kube's watch errors name their cause only in the chain, e.g.
/// `client error (Connect): tcp connect error: Connection refused (os error 111)`).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // Some wrappers print their source already; do not say it twice.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    one_line(&out)
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit status for this error: 2 for anything the user can fix in the
    /// command line, the config or the input (as clap's usage errors), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Read { .. }
            | Error::Config { .. }
            | Error::Flag { .. }
            | Error::NodeName
            | Error::BackendUnavailable(_) => 2,
            Error::Write { .. }
            | Error::Backend { .. }
            | Error::BackendPlan { .. }
            | Error::BackendStart { .. }
            | Error::Capability { .. }
            | Error::Trace(_)
            | Error::Encode { .. }
            | Error::Kube(_)
            | Error::Serve { .. }
            | Error::ConfigChanged(_)
            | Error::Runtime(_)
            | Error::Sysctl(_) => 1,
        }
    }

    /// [`Error::Config`] for `source`, naming the file (`None`: the flags).
    pub fn config(path: Option<PathBuf>, source: kproxy_core::Error) -> Error {
        Error::Config {
            path,
            source: Box::new(source),
        }
    }

    /// [`Error::Backend`] for `mode`.
    pub fn backend(mode: &'static str, source: kproxy_core::Error) -> Error {
        Error::Backend {
            mode,
            source: Box::new(source),
        }
    }

    /// The error and its causes, joined with `: `, on one line (control characters
    /// escaped, see [`one_line`]).
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        one_line(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_joins_the_cause_chain_once() {
        let e = Error::Read {
            path: "x.yaml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(e.report(), "x.yaml: cannot read: no such file");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn reports_and_one_line_escape_control_characters_only() {
        let e = Error::Read {
            path: "bad\nname\u{1b}[31m.yaml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no\rsuch"),
        };
        assert_eq!(
            e.report(),
            "bad\\nname\\u{1b}[31m.yaml: cannot read: no\\rsuch"
        );
        assert_eq!(one_line(&"plain \"quoted\" é"), "plain \"quoted\" é");
    }

    #[test]
    fn usage_problems_exit_2_and_runtime_failures_exit_1() {
        assert_eq!(Error::BackendUnavailable("ipvs").exit_code(), 2);
        assert_eq!(
            Error::BackendUnavailable("ipvs").report(),
            "backend ipvs not available in this build"
        );
        let serve = Error::Serve {
            what: "healthz server",
            addr: "0.0.0.0:10256".into(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
        };
        assert_eq!(serve.exit_code(), 1);
        assert_eq!(
            serve.report(),
            "healthz server on 0.0.0.0:10256: address in use"
        );
    }
}
