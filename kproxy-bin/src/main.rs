//! `kproxy`: a drop-in kube-proxy.
//!
//! `main` parses the command line and hands over to one module per job: [`plan`] prints
//! a service map from files, [`trace`] follows a packet through the iptables rules, [`daemon`] runs the proxy (sources → runner → backend, plus
//! the healthz and metrics servers), [`backend`] is where proxy modes are wired in.
//! Errors are printed once, here, as `kproxy: <error>: <cause>...`.
#![forbid(unsafe_code)]

mod backend;
mod caps;
mod cli;
mod config;
mod conntrack;
mod daemon;
mod error;
mod health;
mod host;
mod input;
mod meta;
mod metrics;
mod node;
mod plan;
mod runner;
mod service_health;
mod source;
mod timefmt;
mod trace;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ProxyFlags};
use crate::error::{Error, Result};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kproxy: {}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Dispatches the subcommand; no subcommand runs the proxy, as kube-proxy does.
fn run() -> Result<ExitCode> {
    // clap prints usage errors itself and exits 2 (0 for --help and --version).
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Plan(args)) => plan::run(&args),
        Some(Command::Trace(args)) => trace::run(&args),
        Some(Command::Cleanup(flags)) => proxy(&flags, true),
        Some(Command::Run(flags)) => proxy(&flags, false),
        None => proxy(&cli.proxy, false),
    }
}

/// `run` and `cleanup`: merge flags and config, then act on the non-config flags
/// (`--write-config-to`, `--cleanup`), which upstream honours with or without `--config`.
fn proxy(flags: &ProxyFlags, cleanup: bool) -> Result<ExitCode> {
    let file = match &flags.config {
        Some(path) => Some((path.as_path(), config::read_config_file(path)?)),
        None => None,
    };
    let cfg = config::merge(flags, file)?;
    if let Some(path) = &flags.write_config_to {
        return write_config(path, &cfg.to_yaml());
    }
    daemon::init_logging(&cfg);
    if flags.init_only == Some(true) {
        // The privileged setup only (an init container can do it for an unprivileged
        // kproxy): conntrack sysctls.
        let root = Path::new("/");
        conntrack::apply(root, &cfg.conntrack, conntrack::num_cpu(root)).map_err(Error::Sysctl)?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let node_name = node::resolve(&cfg.hostname_override, node::host_name);
    if cleanup || flags.cleanup() {
        // Cleanup removes whatever is installed; it does not need to know the node.
        if let Some(cap) = caps::effective().and_then(|c| caps::missing(cfg.resolved_mode(), c)) {
            return Err(Error::Capability {
                what: "cleanup",
                cap,
            });
        }
        let cleaned = runtime.block_on(backend::cleanup_all(&cfg))?;
        tracing::info!(modes = ?cleaned, "cleanup done");
        return Ok(ExitCode::SUCCESS);
    }
    let settings = daemon::Settings {
        cfg,
        config_path: flags.config.clone(),
        node_name: node_name?,
        master: flags.master.clone(),
        from: flags.from.clone(),
        api: source::kube::Tuning::default(),
    };
    runtime.block_on(daemon::run(settings))?;
    Ok(ExitCode::SUCCESS)
}

/// `--write-config-to`: the effective config as v1alpha1 YAML.
fn write_config(path: &Path, yaml: &str) -> Result<ExitCode> {
    std::fs::write(path, yaml).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(ExitCode::SUCCESS)
}
