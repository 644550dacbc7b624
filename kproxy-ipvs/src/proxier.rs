//! [`IpvsProxier`]: the [`Proxier`] for `--proxy-mode=ipvs`, one per IP family.
//!
//! Each sync: plan (pure) → ipsets → IPVS diff applied in order → kube-ipvs0 addresses →
//! companion iptables → conntrack cleanup → unbind addresses nobody wants. The first
//! sync and every full sync read the whole IPVS table from the kernel, so a restarted
//! proxier adopts what is there and changes only what is wrong; partial syncs diff
//! against the state the last sync left, re-reading only the touched services.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use ipnet::IpNet;
use kproxy_core::model::IpFamily;
use kproxy_core::{ChangeSet, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, SyncStats};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::exec::{Executor, RealExecutor};
use crate::handle::{IpvsHandle, IpvsOps};
use crate::netlink::{IpvsInfo, ServiceKey};
use crate::plan::{CHAINS, DUMMY_INTERFACE, IpSet, Plan, SETS, plan, set_name};
use crate::reconcile::{Actual, DestKey, DiffOptions, Op, apply, diff, owned};

/// IPVS requests kept in flight at once during a sync.
pub const OPS_IN_FLIGHT: usize = 64;

/// How long a removed TCP destination may drain before it is deleted anyway.
pub const DEFAULT_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The IPVS proxier of one family.
pub struct IpvsProxier {
    family: IpFamily,
    cfg: KubeProxyConfiguration,
    exclude_cidrs: Vec<IpNet>,
    ipvs: Arc<dyn IpvsOps>,
    exec: Arc<dyn Executor>,
    graceful_timeout: Duration,
    draining: BTreeMap<DestKey, Instant>,
    cache: Option<Actual>,
    last_plan: Option<Plan>,
    initialized: bool,
}

impl std::fmt::Debug for IpvsProxier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsProxier")
            .field("family", &self.family)
            .field("draining", &self.draining.len())
            .finish_non_exhaustive()
    }
}

impl IpvsProxier {
    /// A proxier for `family` over the given IPVS client and executor. Fails when
    /// `ipvs.excludeCIDRs` holds something that is not a CIDR.
    pub fn new(
        cfg: &KubeProxyConfiguration,
        family: IpFamily,
        ipvs: Arc<dyn IpvsOps>,
        exec: Arc<dyn Executor>,
    ) -> Result<IpvsProxier> {
        let exclude_cidrs = cfg
            .ipvs
            .exclude_cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.trim().parse::<IpNet>().map_err(|e| Error::Config {
                    field: format!("ipvs.excludeCIDRs[{i}]"),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(IpvsProxier {
            family,
            cfg: cfg.clone(),
            exclude_cidrs,
            ipvs,
            exec,
            graceful_timeout: DEFAULT_GRACEFUL_TIMEOUT,
            draining: BTreeMap::new(),
            cache: None,
            last_plan: None,
            initialized: false,
        })
    }

    /// A proxier on this host: a netlink IPVS handle and the real executor. Probes the
    /// kernel for the `IPVS` family first (upstream `CanUseIPVSProxier`). Call inside a
    /// tokio runtime.
    pub async fn new_real(cfg: &KubeProxyConfiguration, family: IpFamily) -> Result<IpvsProxier> {
        let handle = IpvsHandle::new()?;
        handle.probe().await?;
        IpvsProxier::new(
            cfg,
            family,
            Arc::new(handle),
            Arc::new(RealExecutor::new()?),
        )
    }

    /// Sets how long a removed TCP destination may drain (default 15 minutes).
    #[must_use]
    pub fn with_graceful_timeout(mut self, t: Duration) -> Self {
        self.graceful_timeout = t;
        self
    }

    /// The destinations draining now (weight 0, waiting for their connections to end).
    pub fn draining(&self) -> BTreeSet<DestKey> {
        self.draining.keys().copied().collect()
    }

    /// The plan of the last successful sync.
    pub fn last_plan(&self) -> Option<&Plan> {
        self.last_plan.as_ref()
    }

    async fn init(&mut self) {
        let mut sysctls = vec![
            ("net/ipv4/vs/conntrack", "1"),
            ("net/ipv4/vs/expire_nodest_conn", "1"),
            ("net/ipv4/vs/expire_quiescent_template", "1"),
            ("net/ipv4/ip_forward", "1"),
        ];
        if self.cfg.ipvs.strict_arp {
            sysctls.extend([
                ("net/ipv4/conf/all/arp_ignore", "1"),
                ("net/ipv4/conf/all/arp_announce", "2"),
            ]);
        }
        for (k, v) in sysctls {
            if let Err(e) = self.exec.set_sysctl(k, v).await {
                tracing::warn!(error = %e, sysctl = k, "cannot set sysctl");
            }
        }
        let secs = |d: kproxy_core::config::Duration| {
            u32::try_from(d.to_std().as_secs()).unwrap_or(u32::MAX)
        };
        let t = IpvsInfo {
            tcp_timeout: secs(self.cfg.ipvs.tcp_timeout),
            tcp_fin_timeout: secs(self.cfg.ipvs.tcp_fin_timeout),
            udp_timeout: secs(self.cfg.ipvs.udp_timeout),
            ..Default::default()
        };
        if let Err(e) = self.ipvs.set_timeouts(&t).await {
            tracing::warn!(error = %e, "cannot set ipvs timeouts");
        }
    }

    async fn read_service(&self, svc: &crate::netlink::Service, actual: &mut Actual) -> Result<()> {
        let dests = self.ipvs.list_destinations(svc).await?;
        actual.insert(svc.key(), (svc.clone(), dests));
        Ok(())
    }

    /// The kernel's services of our family, with destinations for those we may touch.
    async fn read_all(&self, opts: &DiffOptions) -> Result<Actual> {
        let mut actual = Actual::new();
        for svc in self.ipvs.list_services().await? {
            if svc.family != self.family {
                continue;
            }
            if owned(&svc, opts) {
                self.read_service(&svc, &mut actual).await?;
            } else {
                actual.insert(svc.key(), (svc, Vec::new()));
            }
        }
        Ok(actual)
    }

    async fn sync_inner(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> Result<SyncStats> {
        let full = changes.full || self.cache.is_none();
        if !self.initialized {
            self.init().await;
        }
        // Full syncs read the link; partial ones trust what the last sync left there.
        let bound = match (&self.last_plan, full) {
            (Some(last), false) => last.addresses.clone(),
            _ => {
                self.exec.ensure_dummy(DUMMY_INTERFACE).await?;
                self.exec
                    .list_addresses(DUMMY_INTERFACE, self.family)
                    .await?
            }
        };
        let mut facts = node.clone();
        facts.local_addresses.retain(|a| !bound.contains(a));
        let p = plan(map, &facts, &self.cfg, self.family);
        let mut written = 0;

        // 1. ipsets (the iptables rules below reference them).
        if full || self.last_plan.as_ref().is_none_or(|l| l.ipsets != p.ipsets) {
            let existing = self.exec.ipset_names().await?;
            let changed: Vec<IpSet> = match (&self.last_plan, full) {
                (Some(l), false) => p
                    .ipsets
                    .iter()
                    .filter(|s| !l.ipsets.contains(s))
                    .cloned()
                    .collect(),
                _ => p.ipsets.clone(),
            };
            self.exec
                .ipset_restore(&crate::plan::ipset_restore_text(
                    &changed,
                    self.family,
                    Some(&existing),
                ))
                .await?;
            written += changed.len();
        }

        // 2. IPVS.
        let now = Instant::now();
        let opts = DiffOptions {
            family: Some(self.family),
            exclude_cidrs: self.exclude_cidrs.clone(),
            expired: self
                .draining
                .iter()
                .filter(|(_, t)| now.duration_since(**t) >= self.graceful_timeout)
                .map(|(k, _)| *k)
                .collect(),
        };
        let mut actual = match (full, self.cache.take()) {
            (false, Some(mut cache)) => {
                let touched: BTreeSet<ServiceKey> = p
                    .services
                    .iter()
                    .filter(|(_, v)| changes.touches(self.family, &v.owner))
                    .map(|(k, _)| *k)
                    .chain(self.draining.keys().map(|(k, _)| *k))
                    .collect();
                for key in touched {
                    if let Some((svc, _)) = cache.get(&key).cloned() {
                        self.read_service(&svc, &mut cache).await?;
                    }
                }
                cache
            }
            _ => self.read_all(&opts).await?,
        };
        let d = diff(&actual, &p.services, &opts);
        // Like upstream, one failing service does not stop the others: run every op,
        // report the first failure at the end (the runner retries with a full sync).
        let mut failed = None;
        // Up to OPS_IN_FLIGHT requests at once. The kernel handles a netlink socket's
        // messages in the order they are sent, and they are sent in op order, so a
        // service is still added before its destinations.
        let ipvs = self.ipvs.clone();
        let results: Vec<Result<()>> =
            futures::stream::iter(d.ops.iter().cloned().map(|op| run_op(ipvs.clone(), op)))
                .buffered(OPS_IN_FLIGHT)
                .collect()
                .await;
        for (op, r) in d.ops.iter().zip(results) {
            match r {
                // The cache mirrors the kernel; an op the kernel took applies here too.
                Ok(()) => {
                    let _ = apply(&mut actual, op);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ipvs operation failed");
                    failed.get_or_insert(e);
                }
            }
        }
        written += d.ops.len();
        self.draining.retain(|k, _| d.draining.contains(k));
        for k in &d.draining {
            self.draining.entry(*k).or_insert(now);
        }
        self.cache = Some(actual);

        // 3. Bind the wanted addresses.
        for ip in p.addresses.difference(&bound) {
            self.exec.add_address(DUMMY_INTERFACE, *ip).await?;
            written += 1;
        }

        // 4. Companion iptables rules, and the jumps to them on full syncs.
        if full
            || self
                .last_plan
                .as_ref()
                .is_none_or(|l| l.iptables != p.iptables)
        {
            self.exec.restore_iptables(self.family, &p.iptables).await?;
            written += 1;
        }
        if full {
            for j in &p.jumps {
                let rule = |op: &str| {
                    let mut a = vec![
                        "-t".to_owned(),
                        j.table.to_owned(),
                        op.to_owned(),
                        j.from.to_owned(),
                    ];
                    if op == "-I" {
                        a.push("1".into());
                    }
                    a.extend(j.args.iter().cloned());
                    a
                };
                if !self.exec.iptables(self.family, &rule("-C")).await?
                    && !self.exec.iptables(self.family, &rule("-I")).await?
                {
                    return Err(Error::Command {
                        program: format!("iptables {}", rule("-I").join(" ")),
                        status: "failed".into(),
                        stderr: String::new(),
                    });
                }
            }
        }

        // 5. Conntrack entries of removed UDP/SCTP endpoints and services.
        let mut flows = 0;
        for f in changes
            .stale_flows
            .iter()
            .filter(|f| f.family == self.family)
        {
            match self.exec.conntrack_delete(f).await {
                Ok(()) => flows += 1,
                Err(e) => tracing::warn!(error = %e, flow = ?f, "cannot delete conntrack entries"),
            }
        }

        // 6. Unbind addresses no longer wanted (upstream does this last, too).
        for ip in bound.difference(&p.addresses) {
            self.exec.del_address(DUMMY_INTERFACE, *ip).await?;
            written += 1;
        }

        if let Some(e) = failed {
            return Err(e);
        }
        self.initialized = true;
        let ports = if full {
            map.family(self.family).len()
        } else {
            changes.added.len() + changes.updated.len()
        };
        self.last_plan = Some(p);
        Ok(SyncStats {
            full,
            ports_programmed: ports,
            objects_written: written,
            flows_deleted: flows,
        })
    }

    async fn cleanup_inner(&mut self) -> Result<()> {
        // Upstream order (`CleanupLeftovers`): IPVS, the dummy link, iptables, ipsets.
        let mut first_err = None;
        // No IPVS in this kernel (the family does not resolve): nothing to flush.
        match self.ipvs.list_services().await {
            Ok(_) => {
                if let Err(e) = self.ipvs.flush().await {
                    first_err.get_or_insert(e);
                }
            }
            Err(e) => tracing::info!(error = %e, "no ipvs to flush"),
        }
        if let Err(e) = self.exec.delete_dummy(DUMMY_INTERFACE).await {
            first_err.get_or_insert(e);
        }
        for family in IpFamily::ALL {
            for j in crate::plan::jump_rules() {
                let mut a = vec![
                    "-t".to_owned(),
                    j.table.to_owned(),
                    "-D".to_owned(),
                    j.from.to_owned(),
                ];
                a.extend(j.args);
                // Delete every copy; a missing rule or chain ends the loop.
                for _ in 0..8 {
                    if !self.exec.iptables(family, &a).await? {
                        break;
                    }
                }
            }
            for op in ["-F", "-X"] {
                for (table, chain) in CHAINS {
                    let a: Vec<String> = ["-t", table, op, chain]
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect();
                    self.exec.iptables(family, &a).await?;
                }
            }
        }
        let existing = self.exec.ipset_names().await?;
        let ours: BTreeSet<String> = IpFamily::ALL
            .iter()
            .flat_map(|f| SETS.iter().map(move |s| set_name(s.0, *f)))
            .chain(
                existing
                    .iter()
                    .filter(|n| n.starts_with("KPROXY-TMP-") || n.starts_with("KPROXY-6-TMP-"))
                    .cloned(),
            )
            .collect();
        for name in ours.intersection(&existing) {
            if let Err(e) = self.exec.ipset_restore(&format!("destroy {name}\n")).await {
                first_err.get_or_insert(e);
            }
        }
        self.cache = None;
        self.last_plan = None;
        self.draining.clear();
        first_err.map_or(Ok(()), Err)
    }
}

/// One IPVS operation, owned, as a boxed future (so a stream can hold many).
fn run_op(ipvs: Arc<dyn IpvsOps>, op: Op) -> futures::future::BoxFuture<'static, Result<()>> {
    Box::pin(async move {
        match &op {
            Op::AddService(s) => ipvs.add_service(s).await,
            Op::UpdateService(s) => ipvs.update_service(s).await,
            Op::DeleteService(s) => ipvs.delete_service(s).await,
            Op::AddDest(s, x) => ipvs.add_destination(s, x).await,
            Op::UpdateDest(s, x) => ipvs.update_destination(s, x).await,
            Op::DeleteDest(s, x) => ipvs.delete_destination(s, x).await,
        }
    })
}

fn backend(e: Error) -> kproxy_core::Error {
    kproxy_core::Error::Backend {
        mode: "ipvs",
        source: Box::new(e),
    }
}

#[async_trait::async_trait]
impl Proxier for IpvsProxier {
    fn mode(&self) -> &'static str {
        "ipvs"
    }

    async fn sync(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> kproxy_core::Result<SyncStats> {
        let r = self.sync_inner(map, changes, node).await;
        if r.is_err() {
            // Re-read everything next time: the kernel may hold half of this sync.
            self.cache = None;
            self.last_plan = None;
        }
        r.map_err(backend)
    }

    async fn cleanup(&mut self) -> kproxy_core::Result<()> {
        self.cleanup_inner().await.map_err(backend)
    }
}

#[cfg(test)]
mod tests;
