//! [`UserspaceProxier`]: the [`Proxier`] of the userspace mode. Each sync reconciles the
//! proxy sockets with the map (open new ports, close removed ones, hand changed endpoint
//! lists to the running ones), then loads the redirect rules with one
//! `iptables-restore --noflush` per family (the five chains are small, so every sync
//! rewrites them whole). Upstream: `pkg/proxy/userspace/proxier.go` `syncProxyRules`,
//! `mergeService`, `unmergeService`.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kproxy_core::model::{IpFamily, Protocol, ServicePortName};
use kproxy_core::{ChangeSet, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, SyncStats};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::exec::{Executor, FLAGS, Table};
use crate::metrics::Metrics;
use crate::plan::{self, Jumps, ListenConfig, PlannedListener};
use crate::ports::{PortAllocator, PortRange};
use crate::route::Route;
use crate::{tcp, udp};

/// Parses `bindAddress` as the proxy's listen address: empty means `0.0.0.0`; loopback
/// is refused as upstream did.
///
/// # Errors
/// [`Error::BadBindAddress`] or [`Error::LoopbackBind`].
pub fn parse_bind_address(s: &str) -> Result<IpAddr> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    if t.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    let ip: IpAddr = t.parse().map_err(|_| Error::BadBindAddress(s.to_owned()))?;
    if ip.is_loopback() {
        return Err(Error::LoopbackBind);
    }
    Ok(ip)
}

/// A socket held open to reserve an address (upstream `claimNodePort`).
#[derive(Debug)]
#[allow(dead_code, reason = "the sockets are only held, never read")]
enum Claim {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// A running proxy socket.
#[derive(Debug)]
struct Listener {
    bind: SocketAddr,
    protocol: Protocol,
    route: Arc<Route>,
    task: JoinHandle<()>,
    claims: BTreeMap<SocketAddr, Claim>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Closes the listening socket (and, for UDP, its sessions); accepted TCP
        // connections run in their own tasks and drain.
        self.task.abort();
    }
}

/// The userspace proxy backend.
pub struct UserspaceProxier {
    bind: IpAddr,
    udp_idle: Duration,
    use_splice: bool,
    executor: Arc<dyn Executor>,
    metrics: Arc<Metrics>,
    ports: PortAllocator,
    seed: u64,
    listeners: BTreeMap<(IpFamily, ServicePortName), Listener>,
    sctp_seen: BTreeSet<(IpFamily, ServicePortName)>,
    /// Families whose chains this proxier has loaded.
    programmed: BTreeSet<IpFamily>,
}

impl std::fmt::Debug for UserspaceProxier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceProxier")
            .field("bind", &self.bind)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl UserspaceProxier {
    /// A proxier for `cfg` (`bindAddress`, `portRange`, `udpIdleTimeout`) that loads its
    /// rules through `executor`. Opens nothing until the first sync.
    ///
    /// # Errors
    /// A loopback or unparsable `bindAddress`, or a bad `portRange`.
    pub fn new(cfg: &KubeProxyConfiguration, executor: Arc<dyn Executor>) -> Result<Self> {
        let seed = RandomState::new().build_hasher().finish();
        Ok(UserspaceProxier {
            bind: parse_bind_address(&cfg.bind_address)?,
            udp_idle: cfg.effective_udp_idle_timeout(),
            use_splice: true,
            executor,
            metrics: Arc::default(),
            ports: PortAllocator::new(PortRange::parse(&cfg.port_range)?, seed),
            seed,
            listeners: BTreeMap::new(),
            sctp_seen: BTreeSet::new(),
            programmed: BTreeSet::new(),
        })
    }

    /// Uses `seed` for the port picks and endpoint shuffles (tests predict them).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.ports = PortAllocator::new(self.ports.range(), seed);
        self
    }

    /// Turns the zero-copy `splice(2)` TCP path on or off (on by default).
    #[must_use]
    pub fn with_splice(mut self, on: bool) -> Self {
        self.use_splice = on;
        self
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The proxy port of a service port, once a sync opened it.
    pub fn proxy_port(&self, family: IpFamily, name: &ServicePortName) -> Option<u16> {
        self.listeners
            .get(&(family, name.clone()))
            .map(|l| l.bind.port())
    }

    fn next_seed(&mut self) -> u64 {
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        self.seed
    }

    /// Opens the socket of a planned listener on a port from the allocator, retrying
    /// ports that turn out to be busy (they stay marked as used).
    fn open(
        &mut self,
        want: &PlannedListener,
        port: &kproxy_core::ServicePort,
    ) -> Result<Listener> {
        let tries = self.ports.range().map_or(1, |r| r.size.min(64));
        let mut last = None;
        for _ in 0..tries {
            let p = self.ports.allocate()?;
            let addr = SocketAddr::new(want.bind.ip(), p);
            let route = Arc::new(Route::new(port, self.next_seed()));
            let metrics = Arc::clone(&self.metrics);
            let (idle, splice) = (self.udp_idle, self.use_splice);
            let r = Arc::clone(&route);
            let opened: std::io::Result<(SocketAddr, JoinHandle<()>)> = match want.protocol {
                Protocol::Udp => udp::bind(addr).and_then(|s| {
                    let bound = s.local_addr()?;
                    Ok((bound, tokio::spawn(udp::serve(s, r, metrics, idle))))
                }),
                _ => tcp::bind(addr).and_then(|l| {
                    let bound = l.local_addr()?;
                    Ok((bound, tokio::spawn(tcp::serve(l, r, metrics, splice))))
                }),
            };
            match opened {
                Ok((bound, task)) => {
                    return Ok(Listener {
                        bind: bound,
                        protocol: want.protocol,
                        route,
                        task,
                        claims: BTreeMap::new(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Listen {
            service: want.name.to_string(),
            protocol: want.protocol.as_api(),
            addr: want.bind,
            source: last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()),
        })
    }

    /// Holds the planned claims open; a conflict is logged, as it only means someone else
    /// owns the port (upstream `Port conflict detected`).
    fn claim(listener: &mut Listener, want: &PlannedListener) {
        listener.claims.retain(|a, _| want.claims.contains(a));
        for addr in &want.claims {
            if listener.claims.contains_key(addr) {
                continue;
            }
            let held = match want.protocol {
                Protocol::Udp => std::net::UdpSocket::bind(addr).map(Claim::Udp),
                _ => std::net::TcpListener::bind(addr).map(Claim::Tcp),
            };
            match held {
                Ok(c) => {
                    listener.claims.insert(*addr, c);
                }
                Err(e) => {
                    tracing::warn!(service = %want.name, %addr, error = %e, "port conflict detected")
                }
            }
        }
    }

    /// Reconciles the sockets of one family with the map; returns the first error of a
    /// port that could not be opened (the others are still served).
    fn reconcile(
        &mut self,
        map: &ServiceMap,
        family: IpFamily,
        listen: &ListenConfig,
        node: &NodeFacts,
    ) -> Option<Error> {
        let now = tokio::time::Instant::now().into_std();
        let wanted = map.family(family);
        // Close what is gone or changed protocol/address.
        let stale: Vec<(IpFamily, ServicePortName)> = self
            .listeners
            .iter()
            .filter(|((f, name), l)| {
                *f == family
                    && (name.protocol == Protocol::Sctp
                        || !wanted.contains_key(name)
                        || l.bind.ip() != listen.listen_ip)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(l) = self.listeners.remove(&k) {
                tracing::info!(service = %k.1, family = %family, port = l.bind.port(), "closing proxy socket");
                self.ports.release(l.bind.port());
            }
        }
        let planned = plan::plan(map, family, &BTreeMap::new(), listen, node, &Jumps::none());
        for name in &planned.sctp {
            if self.sctp_seen.insert((family, name.clone())) {
                Metrics::add(&self.metrics.sctp_unsupported, 1);
                tracing::warn!(service = %name, "SCTP is not supported in userspace mode; port not proxied");
            }
        }
        self.sctp_seen
            .retain(|(f, n)| *f != family || wanted.contains_key(n));
        let mut first_err = None;
        for want in &planned.listeners {
            let Some(port) = wanted.get(&want.name) else {
                continue;
            };
            let key = (family, want.name.clone());
            if let Some(l) = self.listeners.get_mut(&key) {
                l.route.update(port, now);
                Self::claim(l, want);
                continue;
            }
            match self.open(want, port) {
                Ok(mut l) => {
                    tracing::info!(service = %want.name, protocol = %l.protocol, addr = %l.bind, "opened proxy socket");
                    Self::claim(&mut l, want);
                    self.listeners.insert(key, l);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot proxy service port");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err
    }

    /// Deletes the UDP conntrack entries of virtual IPs and node ports that went away
    /// (upstream ran `conntrack -D --orig-dst <clusterIP> -p udp` when a UDP service was
    /// removed): their entries still point at the old proxy port. Entries of removed
    /// endpoints need nothing here, as the kernel only ever sees the proxy port. Failures
    /// are logged: the entries time out on their own.
    async fn delete_stale_flows(&self, family: IpFamily, changes: &ChangeSet) -> usize {
        let mut deleted = 0;
        for flow in changes
            .stale_flows
            .iter()
            .filter(|f| f.family == family && f.endpoint.is_none() && f.protocol == Protocol::Udp)
        {
            match self.executor.delete_flows(flow).await {
                Ok(n) => deleted += n,
                Err(e) => tracing::warn!(error = %e, ?flow, "conntrack cleanup failed"),
            }
        }
        deleted
    }

    /// The nat and filter tables as `iptables-save` prints them.
    async fn jumps(&self, family: IpFamily) -> Result<(String, String)> {
        let err = |source| Error::Iptables { family, source };
        let nat = self.executor.save(family, Table::Nat).await.map_err(err)?;
        let filter = self
            .executor
            .save(family, Table::Filter)
            .await
            .map_err(err)?;
        Ok((nat, filter))
    }
}

#[async_trait::async_trait]
impl Proxier for UserspaceProxier {
    fn mode(&self) -> &'static str {
        "userspace"
    }

    async fn sync(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> kproxy_core::Result<SyncStats> {
        let mut stats = SyncStats {
            full: true,
            ..SyncStats::default()
        };
        let mut first_err = None;
        for family in IpFamily::ALL {
            let listen = ListenConfig::new(self.bind, family, node);
            let before = self.listeners.len();
            if let Some(e) = self.reconcile(map, family, &listen, node) {
                first_err.get_or_insert(e);
            }
            stats.objects_written += self.listeners.len().saturating_sub(before);
            let has_ports = self.listeners.keys().any(|(f, _)| *f == family);
            if !has_ports && !self.programmed.contains(&family) {
                continue;
            }
            let ports: BTreeMap<ServicePortName, u16> = self
                .listeners
                .iter()
                .filter(|((f, _), _)| *f == family)
                .map(|((_, n), l)| (n.clone(), l.bind.port()))
                .collect();
            stats.ports_programmed += ports.len();
            let (nat, filter) = self.jumps(family).await?;
            let p = plan::plan(
                map,
                family,
                &ports,
                &listen,
                node,
                &Jumps::from_saved(&nat, &filter),
            );
            self.executor
                .restore(family, &p.rules, FLAGS)
                .await
                .map_err(|source| Error::Iptables { family, source })?;
            self.programmed.insert(family);
            stats.objects_written += p.rule_count;
            stats.flows_deleted += self.delete_stale_flows(family, changes).await;
        }
        tracing::debug!(
            changes = changes.len(),
            full = changes.full,
            listeners = self.listeners.len(),
            "userspace sync done"
        );
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(stats),
        }
    }

    async fn cleanup(&mut self) -> kproxy_core::Result<()> {
        for (_, l) in std::mem::take(&mut self.listeners) {
            self.ports.release(l.bind.port());
        }
        for family in IpFamily::ALL {
            let Ok((nat, filter)) = self.jumps(family).await else {
                // No readable tables (e.g. no ip6tables): nothing of ours can be there.
                continue;
            };
            let rules = plan::cleanup_rules(&nat, &filter);
            if !rules.is_empty() {
                self.executor
                    .restore(family, &rules, FLAGS)
                    .await
                    .map_err(|source| Error::Iptables { family, source })?;
            }
            self.programmed.remove(&family);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "proxier_tests.rs"]
mod tests;
