//! `kproxy run`: a source (API server or files) → [`Runner`] → backend, plus the healthz,
//! metrics and health check node port servers, until SIGTERM or SIGINT.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kproxy_core::config::ProxyMode;
use kproxy_core::{BuildOptions, ChangeTracker, KubeProxyConfiguration, Proxier};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::health::{self, ProxyHealth};
use crate::metrics::{self, Metrics};
use crate::runner::{BURST, FULL_SYNC_PERIOD, Runner, Synced, Timing};
use crate::service_health::ServiceHealthServers;
use crate::{backend, input, source};

/// How long to wait before retrying a listen that failed (upstream: 5 s).
const LISTEN_RETRY: Duration = Duration::from_secs(5);
/// Room for bursts of watch events while a sync runs.
const EVENT_BUFFER: usize = 1024;

/// Everything the daemon needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The effective config.
    pub cfg: KubeProxyConfiguration,
    /// The config file, watched: kproxy exits when it changes, so that it restarts
    /// with the new content (as upstream).
    pub config_path: Option<PathBuf>,
    /// This node's name.
    pub node_name: String,
    /// `--master`: the API server URL, overriding the kubeconfig's.
    pub master: Option<String>,
    /// `--from`: read objects from files instead of the API server.
    pub from: Vec<PathBuf>,
    /// Retry and timeout settings of the API watch path.
    pub api: source::kube::Tuning,
}

/// Sets up `tracing` from the config's logging section: verbosity 0-1 is `info`, 2-3
/// `debug`, 4 and up `trace`; `logging.format: json` gives JSON lines. `RUST_LOG`, if
/// set, wins.
pub fn init_logging(cfg: &KubeProxyConfiguration) {
    let level = match cfg.logging.verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only on a terminal: container logs keep plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // A second init (tests) is harmless; ignore it.
    let _ = if cfg.logging.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the proxy with the backend of the configured mode until SIGTERM or SIGINT.
///
/// # Errors
/// An unavailable backend, an unusable Kubernetes client config, a listen failure with
/// `bindAddressHardFail`, or a changed config file.
pub async fn run(s: Settings) -> Result<()> {
    let mode = s.cfg.resolved_mode();
    if let Some(caps) = crate::caps::effective() {
        if let Some(cap) = crate::caps::missing(mode, caps) {
            return Err(Error::Capability {
                what: backend::mode_name(mode),
                cap,
            });
        }
        if mode != ProxyMode::Ipvs {
            crate::caps::warn_if_no_net_raw(caps);
        }
    }
    let metrics = Arc::new(Metrics::new());
    let proxier = backend::build_proxier(mode, &s.cfg, &metrics).await?;
    write_oom_score_adj(s.cfg.oom_score_adj);
    // Upstream sets these at start too. An unprivileged container has a read-only
    // /proc/sys: then the node's own values stay, which the DaemonSet documents.
    let root = std::path::Path::new("/");
    if let Err(e) = crate::conntrack::apply(root, &s.cfg.conntrack, crate::conntrack::num_cpu(root))
    {
        tracing::warn!(error = %Error::Sysctl(e).report(), "leaving conntrack sysctls as they are");
    }
    if mode == ProxyMode::Iptables
        && s.cfg.iptables.localhost_node_ports.unwrap_or(true)
        && crate::conntrack::covers_ipv4_loopback(&s.cfg.node_port_addresses)
    {
        // Upstream iptables NewProxier: NodePorts on 127.0.0.1 need the kernel to route
        // packets to loopback addresses after DNAT.
        crate::conntrack::ensure_route_localnet(root).map_err(Error::Sysctl)?;
    }
    let config_changed = watch_config(s.config_path.clone());
    run_with(s, proxier, backend::mode_name(mode), metrics, async move {
        tokio::select! {
            () = shutdown_signal() => Ok(()),
            e = config_changed => Err(e),
        }
    })
    .await
}

/// [`run`] with a given backend (which may export into `metrics` too), until `stop`
/// completes (its error is returned).
pub async fn run_with(
    s: Settings,
    proxier: Box<dyn Proxier>,
    mode: &'static str,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = Result<()>>,
) -> Result<()> {
    let cfg = &s.cfg;
    tracing::info!(node = %s.node_name, mode, "starting kproxy");
    // Servers and sources end with the daemon (what matters in tests; a process exits).
    let mut tasks = Tasks::default();
    let health = Arc::new(ProxyHealth::new(cfg.effective_sync_period()));
    let hard_fail = cfg.bind_address_hard_fail;
    let healthz = health::router(health::HealthServer {
        health: health.clone(),
        metrics: metrics.clone(),
    });
    tasks.extend(
        serve(
            "healthz server",
            &cfg.healthz_bind_address,
            healthz,
            hard_fail,
        )
        .await?,
    );
    let metrics_app = metrics::router(metrics::MetricsServer {
        metrics: metrics.clone(),
        mode,
        config: Arc::new(cfg.clone()),
    });
    tasks.extend(
        serve(
            "metrics server",
            &cfg.metrics_bind_address,
            metrics_app,
            hard_fail,
        )
        .await?,
    );

    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    if s.from.is_empty() {
        let client = source::kube::client(
            &cfg.client_connection.kubeconfig,
            s.master.as_deref(),
            &s.api,
        )
        .await?;
        let m = metrics.clone();
        let on_error: source::kube::OnError = Box::new(move |r| m.watch_error(r.as_str()));
        tasks.push(tokio::spawn(source::kube::run(
            client,
            s.node_name.clone(),
            tx,
            on_error,
            s.api,
        )));
    } else {
        tasks.push(tokio::spawn(source::file::run(
            s.from.clone(),
            tx,
            source::file::POLL_INTERVAL,
        )));
    }

    let (synced_tx, synced_rx) = watch::channel(Arc::new(Synced::default()));
    tasks.push(tokio::spawn(service_health_loop(
        health.clone(),
        cfg.node_port_addresses.clone(),
        synced_rx,
    )));

    let timing = Timing {
        min_sync_period: cfg.effective_min_sync_period(),
        sync_period: cfg.effective_sync_period(),
        full_sync_period: FULL_SYNC_PERIOD,
        burst: BURST,
    };
    let tracker = ChangeTracker::new(BuildOptions::from_config(cfg, &s.node_name));
    let bind_ip = cfg.bind_address.parse::<IpAddr>().ok();
    let runner = Runner::new(tracker, proxier, timing, health, metrics)
        .with_bind_ip(bind_ip)
        .with_host_addresses(true)
        .with_synced(synced_tx);
    let mut stopped = Ok(());
    runner.run(rx, async { stopped = stop.await }).await;
    stopped
}

/// Background tasks, aborted when dropped.
#[derive(Default)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    fn push(&mut self, t: tokio::task::JoinHandle<()>) {
        self.0.push(t);
    }

    fn extend(&mut self, t: Option<tokio::task::JoinHandle<()>>) {
        self.0.extend(t);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Keeps the health check node port servers in step with each successful sync.
async fn service_health_loop(
    health: Arc<ProxyHealth>,
    node_port_addresses: Vec<String>,
    mut synced: watch::Receiver<Arc<Synced>>,
) {
    let mut servers = ServiceHealthServers::new(health);
    while synced.changed().await.is_ok() {
        let s = synced.borrow_and_update().clone();
        let addresses =
            ServiceHealthServers::listen_addresses(&node_port_addresses, &s.node.node_ips);
        servers.reconcile(&s.map, &addresses).await;
    }
}

/// Serves `app` on `addr` (`ip:port`; empty disables). A failed listen is fatal with
/// `bindAddressHardFail`, else retried every 5 s in the background, as upstream.
async fn serve(
    what: &'static str,
    addr: &str,
    app: axum::Router,
    hard_fail: bool,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    if addr.is_empty() {
        tracing::info!("{what} disabled");
        return Ok(None);
    }
    let sock: SocketAddr = addr.parse().map_err(|_| Error::Serve {
        what,
        addr: addr.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an ip:port"),
    })?;
    let first = TcpListener::bind(sock).await;
    let first = match first {
        Err(source) if hard_fail => {
            return Err(Error::Serve {
                what,
                addr: addr.to_owned(),
                source,
            });
        }
        other => other.ok(),
    };
    Ok(Some(tokio::spawn(async move {
        let mut listener = first;
        loop {
            let l = match listener.take() {
                Some(l) => l,
                None => match TcpListener::bind(sock).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(addr = %sock, error = %e, "{what} cannot listen; retrying");
                        tokio::time::sleep(LISTEN_RETRY).await;
                        continue;
                    }
                },
            };
            tracing::info!(addr = %sock, "{what} listening");
            if let Err(e) = axum::serve(l, app.clone()).await {
                tracing::warn!(addr = %sock, error = %e, "{what} failed; restarting");
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        }
    })))
}

/// `oomScoreAdj`, written as upstream does; a failure is only logged.
fn write_oom_score_adj(value: Option<i32>) {
    if let Some(v) = value
        && let Err(e) = std::fs::write("/proc/self/oom_score_adj", v.to_string())
    {
        tracing::debug!(error = %e, value = v, "cannot set oom_score_adj");
    }
}

/// Resolves when the config file changes (upstream exits then, so that the DaemonSet
/// restarts it with the new content); never without a file.
async fn watch_config(path: Option<PathBuf>) -> Error {
    let Some(path) = path else {
        return std::future::pending().await;
    };
    let paths = [path.clone()];
    let first = input::fingerprint(&paths);
    loop {
        tokio::time::sleep(source::file::POLL_INTERVAL).await;
        if input::fingerprint(&paths) != first {
            return Error::ConfigChanged(path);
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

#[cfg(test)]
mod faults;
#[cfg(test)]
mod tests;
