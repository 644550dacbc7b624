//! [`RealExecutor`]: runs the iptables and conntrack binaries with `tokio::process`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use kproxy_core::model::IpFamily;
use kproxy_core::{FlowTarget, StaleFlow};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Executor, RestoreFlags, netlink};
use crate::error::{Error, Result};
use crate::nfacct::Counter;
use crate::plan::Table;

/// Which iptables flavour to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-nft`, `iptables-nft-restore`, ...
    Nft,
    /// `iptables-legacy`, `iptables-legacy-restore`, ...
    Legacy,
    /// Plain `iptables`, whatever the host's alternatives point at.
    Default,
}

impl Backend {
    fn tool(self, family: IpFamily, suffix: &str) -> String {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        match self {
            Backend::Nft => format!("{base}-nft{suffix}"),
            Backend::Legacy => format!("{base}-legacy{suffix}"),
            Backend::Default => format!("{base}{suffix}"),
        }
    }
}

/// Runs the real tools, optionally behind a command prefix (for example
/// `["ip", "netns", "exec", "NS"]`), each with a time limit.
#[derive(Debug, Clone)]
pub struct RealExecutor {
    prefix: Vec<String>,
    backend: Backend,
    timeout: Duration,
}

struct Output {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl RealExecutor {
    /// An executor for `backend` with a 30 s limit per command and no prefix.
    pub fn new(backend: Backend) -> Self {
        RealExecutor {
            prefix: Vec::new(),
            backend,
            timeout: Duration::from_secs(30),
        }
    }

    /// Runs every command behind `prefix` (e.g. `ip netns exec NS`). With `ip netns
    /// exec NS` the nfacct netlink requests go to namespace `NS` too.
    #[must_use]
    pub fn with_prefix(mut self, prefix: Vec<String>) -> Self {
        self.prefix = prefix;
        self
    }

    /// Sets the limit per command.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The network namespace the prefix runs commands in (`ip netns exec NAME ...`):
    /// netlink requests (nfacct) go there too. `None` means the current namespace.
    pub fn netns(&self) -> Option<PathBuf> {
        match self.prefix.as_slice() {
            [ip, netns, exec, name, ..] if ip == "ip" && netns == "netns" && exec == "exec" => {
                Some(PathBuf::from("/run/netns").join(name))
            }
            _ => None,
        }
    }

    /// Deletes the nfacct object `name` (`EBUSY` while a rule uses it). Cleanup and
    /// tests; syncs never delete counters.
    pub async fn delete_nfacct(&self, name: &str) -> Result<()> {
        netlink::delete(self.netns(), name).await
    }

    /// Runs `program args` (behind the prefix), feeding it `stdin`. The child leads its
    /// own process group; when the time limit passes the whole group is killed (a
    /// wrapper's children too) and the child reaped before this returns.
    async fn run(
        &self,
        family: IpFamily,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<Output> {
        let mut argv: Vec<String> = self.prefix.clone();
        argv.push(program.to_owned());
        argv.extend(args.iter().cloned());
        let command = argv.join(" ");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let spawn_err = |source| Error::Spawn {
            family,
            command: command.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let pid = child.id();
        let (pipe_in, pipe_out, pipe_err) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let work = async {
            let feed = async {
                if let (Some(text), Some(mut pipe)) = (stdin, pipe_in) {
                    // A child that exits without reading all of its input (a missing
                    // binary behind `env`, an early error) closes the pipe: its exit
                    // status and stderr say why, not this EPIPE.
                    match pipe.write_all(text.as_bytes()).await {
                        Ok(()) => pipe.shutdown().await.or_else(ignore_broken_pipe)?,
                        Err(e) => ignore_broken_pipe(e)?,
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            let (fed, stdout, stderr) = tokio::join!(feed, read_all(pipe_out), read_all(pipe_err));
            fed?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>(Output {
                status,
                stdout: String::from_utf8_lossy(&stdout?).into_owned(),
                stderr: String::from_utf8_lossy(&stderr?).trim().to_owned(),
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(out) => out.map_err(spawn_err),
            Err(_) => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    // The group's id is the child's pid (`process_group(0)`).
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = child.start_kill();
                // SIGKILL cannot be ignored: the wait is short, and reaps the child.
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                Err(Error::Timeout {
                    family,
                    command,
                    timeout: self.timeout,
                })
            }
        }
    }

    fn fail(family: IpFamily, program: &str, args: &[String], out: &Output) -> Error {
        Error::Command {
            family,
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: out.stderr.clone(),
        }
    }

    async fn iptables(
        &self,
        family: IpFamily,
        args: Vec<String>,
    ) -> Result<(Output, String, Vec<String>)> {
        let program = self.backend.tool(family, "");
        let out = self.run(family, &program, &args, None).await?;
        Ok((out, program, args))
    }
}

/// Multi-line tool output as one log-friendly line.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(l);
    }
    out
}

/// The input line an `iptables-restore` error names (`line 9: RULE_APPEND failed ...`
/// from iptables-nft, `line 9 failed` from iptables-legacy).
fn failed_line(stderr: &str) -> Option<usize> {
    stderr.match_indices("line ").find_map(|(i, w)| {
        let digits: String = stderr[i + w.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

fn ignore_broken_pipe(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        p.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

fn table_args(table: Table, rest: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["-w", "5", "-t", table.as_str()].map(String::from).to_vec();
    a.extend(rest.iter().map(|s| (*s).to_owned()));
    a
}

#[async_trait::async_trait]
impl Executor for RealExecutor {
    async fn restore(&self, family: IpFamily, text: &str, flags: RestoreFlags) -> Result<()> {
        let program = self.backend.tool(family, "-restore");
        let mut args: Vec<String> = Vec::new();
        if flags.noflush {
            args.push("--noflush".into());
        }
        if flags.counters {
            args.push("--counters".into());
        }
        args.extend(["-w".into(), "5".into()]);
        let mut out = self.run(family, &program, &args, Some(text)).await?;
        if !out.status.success() {
            // Like upstream's restore-failure log: quote the input line the tool names.
            out.stderr = one_line(&out.stderr);
            if let Some(n) = failed_line(&out.stderr)
                && let Some(l) = n.checked_sub(1).and_then(|i| text.lines().nth(i))
            {
                out.stderr.push_str(&format!("; input line {n}: {l}"));
            }
            return Err(Self::fail(family, &program, &args, &out));
        }
        Ok(())
    }

    async fn save(&self, family: IpFamily, table: Table) -> Result<String> {
        let program = self.backend.tool(family, "-save");
        let args = vec!["-t".to_owned(), table.as_str().to_owned()];
        let out = self.run(family, &program, &args, None).await?;
        if !out.status.success() {
            return Err(Self::fail(family, &program, &args, &out));
        }
        Ok(out.stdout)
    }

    async fn ensure_chain(&self, family: IpFamily, table: Table, chain: &str) -> Result<bool> {
        let (out, program, args) = self
            .iptables(family, table_args(table, &["-N", chain]))
            .await?;
        if out.status.success() {
            return Ok(false);
        }
        if out.stderr.contains("exists") {
            return Ok(true);
        }
        Err(Self::fail(family, &program, &args, &out))
    }

    async fn chain_exists(&self, family: IpFamily, table: Table, chain: &str) -> Result<bool> {
        let (out, program, args) = self
            .iptables(family, table_args(table, &["-S", chain]))
            .await?;
        if out.status.success() {
            return Ok(true);
        }
        if out.status.code() == Some(1) {
            return Ok(false);
        }
        Err(Self::fail(family, &program, &args, &out))
    }

    async fn ensure_rule(
        &self,
        family: IpFamily,
        table: Table,
        chain: &str,
        rule: &[String],
    ) -> Result<bool> {
        let mut check = table_args(table, &["-C", chain]);
        check.extend(rule.iter().cloned());
        let (out, program, args) = self.iptables(family, check).await?;
        if out.status.success() {
            return Ok(true);
        }
        if out.status.code() != Some(1) {
            return Err(Self::fail(family, &program, &args, &out));
        }
        let mut insert = table_args(table, &["-I", chain]);
        insert.extend(rule.iter().cloned());
        let (out, program, args) = self.iptables(family, insert).await?;
        if !out.status.success() {
            return Err(Self::fail(family, &program, &args, &out));
        }
        Ok(false)
    }

    async fn delete_rule(
        &self,
        family: IpFamily,
        table: Table,
        chain: &str,
        rule: &[String],
    ) -> Result<bool> {
        let mut check = table_args(table, &["-C", chain]);
        check.extend(rule.iter().cloned());
        let (out, _, _) = self.iptables(family, check).await?;
        if !out.status.success() {
            // Not there (or its chain is gone): nothing to delete.
            return Ok(false);
        }
        let mut del = table_args(table, &["-D", chain]);
        del.extend(rule.iter().cloned());
        let (out, program, args) = self.iptables(family, del).await?;
        if !out.status.success() {
            return Err(Self::fail(family, &program, &args, &out));
        }
        Ok(true)
    }

    async fn delete_flows(&self, flow: &StaleFlow) -> Result<usize> {
        let args = conntrack_args(flow);
        let out = self.run(flow.family, "conntrack", &args, None).await?;
        let text = format!("{}\n{}", out.stdout, out.stderr);
        let deleted = text.lines().find_map(|l| {
            let l = l.trim();
            l.strip_suffix("flow entries have been deleted.")
                .or_else(|| l.strip_suffix("flow entry has been deleted."))
                .and_then(|n| n.rsplit(':').next())
                .and_then(|n| n.trim().parse::<usize>().ok())
        });
        match deleted {
            Some(n) => Ok(n),
            None if out.status.success() => Ok(0),
            None => Err(Self::fail(flow.family, "conntrack", &args, &out)),
        }
    }

    async fn version(&self, family: IpFamily) -> Result<String> {
        let program = self.backend.tool(family, "");
        let args = vec!["--version".to_owned()];
        let out = self.run(family, &program, &args, None).await?;
        if !out.status.success() {
            return Err(Self::fail(family, &program, &args, &out));
        }
        Ok(out.stdout.trim().to_owned())
    }

    async fn ensure_nfacct(&self, name: &str) -> Result<()> {
        netlink::ensure(self.netns(), name).await
    }

    async fn read_nfacct(&self, name: &str) -> Result<Counter> {
        netlink::read(self.netns(), name).await
    }
}

/// `conntrack -D` arguments for a stale flow (upstream ≤1.30 `pkg/util/conntrack`):
/// `-p udp --orig-dst VIP --orig-port-dst P [--dst-nat EP]`, or `-p udp --dport NP
/// [--dst-nat EP]` for a node port; `-f ipv6` for IPv6.
pub fn conntrack_args(flow: &StaleFlow) -> Vec<String> {
    let mut a: Vec<String> = vec!["-D".into(), "-p".into(), flow.protocol.as_lower().into()];
    if flow.family == IpFamily::V6 {
        a.extend(["-f".into(), "ipv6".into()]);
    }
    match flow.target {
        FlowTarget::Vip { ip, port } => {
            a.extend([
                "--orig-dst".into(),
                ip.to_string(),
                "--orig-port-dst".into(),
                port.to_string(),
            ]);
        }
        FlowTarget::NodePort(np) => a.extend(["--dport".into(), np.to_string()]),
    }
    if let Some(ep) = flow.endpoint {
        a.extend(["--dst-nat".into(), ep.to_string()]);
    }
    a
}

/// Whether `iptables --version` output names a version with `MASQUERADE --random-fully`
/// (1.6.2 and later, as upstream's `HasRandomFully`).
pub fn supports_random_fully(version: &str) -> bool {
    let Some(v) = version.split_whitespace().find_map(|w| w.strip_prefix('v')) else {
        return false;
    };
    let nums: Vec<u32> = v.split('.').map_while(|p| p.parse().ok()).collect();
    let key = (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
        nums.get(2).copied().unwrap_or(0),
    );
    key >= (1, 6, 2)
}

/// Chooses nft or legacy iptables like upstream's iptables wrapper: whichever already
/// holds kubelet's or kube-proxy's chains, else nft; plain `iptables` when neither
/// flavoured tool runs.
pub async fn detect_backend(prefix: &[String]) -> Backend {
    let mut available = Vec::new();
    for b in [Backend::Nft, Backend::Legacy] {
        let ex = RealExecutor::new(b)
            .with_prefix(prefix.to_vec())
            .with_timeout(Duration::from_secs(10));
        let program = b.tool(IpFamily::V4, "-save");
        let Ok(out) = ex.run(IpFamily::V4, &program, &[], None).await else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        if [
            "KUBE-IPTABLES-HINT",
            "KUBE-KUBELET-CANARY",
            "KUBE-PROXY-CANARY",
        ]
        .iter()
        .any(|c| out.stdout.contains(c))
        {
            return b;
        }
        available.push(b);
    }
    available.first().copied().unwrap_or(Backend::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_core::model::Protocol;

    #[test]
    fn conntrack_arguments_follow_upstream() {
        let flow = StaleFlow {
            family: IpFamily::V4,
            protocol: Protocol::Udp,
            target: FlowTarget::Vip {
                ip: "10.96.0.10".parse().unwrap(),
                port: 53,
            },
            endpoint: Some("10.1.0.5".parse().unwrap()),
        };
        assert_eq!(
            conntrack_args(&flow).join(" "),
            "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --dst-nat 10.1.0.5"
        );
        let np = StaleFlow {
            family: IpFamily::V6,
            target: FlowTarget::NodePort(30053),
            endpoint: None,
            ..flow
        };
        assert_eq!(
            conntrack_args(&np).join(" "),
            "-D -p udp -f ipv6 --dport 30053"
        );
    }

    #[test]
    fn restore_errors_name_the_failed_input_line() {
        assert_eq!(
            failed_line("iptables-restore v1.8.9 (nf_tables): ; line 9: RULE_APPEND failed"),
            Some(9)
        );
        assert_eq!(failed_line("iptables-restore: line 12 failed"), Some(12));
        assert_eq!(
            failed_line("Another app is currently holding the xtables lock."),
            None
        );
    }

    #[test]
    fn random_fully_needs_1_6_2() {
        assert!(supports_random_fully("iptables v1.8.9 (nf_tables)"));
        assert!(supports_random_fully("iptables v1.6.2"));
        assert!(!supports_random_fully("iptables v1.6.1"));
        assert!(!supports_random_fully("garbage"));
    }

    #[tokio::test]
    async fn missing_binary_is_a_spawn_error() {
        let ex = RealExecutor::new(Backend::Default)
            .with_prefix(vec!["/nonexistent/kproxy-test".into()]);
        let e = ex.version(IpFamily::V4).await.unwrap_err();
        assert!(matches!(e, Error::Spawn { .. }), "{e}");
    }
}
