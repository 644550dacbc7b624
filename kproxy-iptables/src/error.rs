//! The crate's one error type.

use kproxy_core::model::IpFamily;

/// Why planning, parsing, tracing or applying iptables rules failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be turned into rules (a bad CIDR or masquerade bit).
    #[error("config: {field}: {reason}")]
    Config {
        /// The config field, as the document spells it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// iptables-restore input that the ruleset model does not understand.
    #[error("line {line}: {reason}: {text:?}")]
    Parse {
        /// 1-based line number in the input.
        line: usize,
        /// What is wrong.
        reason: String,
        /// The offending line.
        text: String,
    },
    /// A command or rule refers to a chain the model does not have.
    #[error("table {table}: no chain {chain}")]
    NoSuchChain {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// `-D` of a rule that is not there.
    #[error("table {table}: chain {chain}: no rule to delete: {rule}")]
    NoSuchRule {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
        /// The rule spec.
        rule: String,
    },
    /// `-X` of a chain that still has rules or references.
    #[error("table {table}: chain {chain} is not empty or still referenced")]
    ChainBusy {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// A trace followed too many jumps (a loop in the rules).
    #[error("trace: more than {0} jumps, the rules loop")]
    TraceTooDeep(usize),
    /// Spawning or talking to a command failed.
    #[error("{family}: running {command}")]
    Spawn {
        /// The family whose tool was run.
        family: IpFamily,
        /// The command line.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A command exited with a failure.
    #[error("{family}: {command} failed ({status}): {stderr}")]
    Command {
        /// The family whose tool was run.
        family: IpFamily,
        /// The command line.
        command: String,
        /// Exit status, as printed.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A command did not finish in time; it was killed, with its process group.
    #[error("{family}: {command} timed out after {timeout:?}, killed")]
    Timeout {
        /// The family whose tool was run.
        family: IpFamily,
        /// The command line.
        command: String,
        /// The time limit.
        timeout: std::time::Duration,
    },
    /// An nfnetlink accounting (nfacct) request failed: the kernel refused it (the
    /// source's raw OS error is the errno), or the socket or its namespace did not work.
    #[error("nfacct: {op} {name:?}")]
    Nfacct {
        /// What was asked: "create", "read".
        op: &'static str,
        /// The counter's name.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A failure injected by the recording executor.
    #[error("injected failure: {0}")]
    Injected(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
