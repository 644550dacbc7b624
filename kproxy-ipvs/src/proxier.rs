//! [`IpvsProxier`]: the [`Proxier`] for `--proxy-mode=ipvs`, one per IP family.
//!
//! Each sync: plan (pure) → ipsets → IPVS diff applied in order → kube-ipvs0 addresses →
//! companion iptables → conntrack cleanup → unbind addresses nobody wants. The first
//! sync and every full sync read the whole IPVS table from the kernel, so a restarted
//! proxier adopts what is there and changes only what is wrong. Partial syncs re-plan
//! only the ports in the change set ([`IncrementalPlan`]) and touch only what that
//! changed: ipset `add`/`del` lines, the changed virtual servers (read again first),
//! the addresses that come and go.
//!
//! Faults (issue 8): IPVS requests go out in two phases, every add and update first,
//! then the deletes and weight-0 updates of virtual servers whose adds all went in, so
//! a failure never takes away a working destination before its replacement is in. A
//! failed step is logged, counted in [`Metrics`] and returned; the proxier then forgets
//! its cache and plan, so the next sync reads the kernel again in full and converges.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_core::model::{IpFamily, ServicePortName};
use kproxy_core::{ChangeSet, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, SyncStats};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::exec::{Executor, RealExecutor};
use crate::handle::{IpvsHandle, IpvsOps};
use crate::netlink::{IpvsInfo, ServiceKey};
use crate::plan::{
    CHAINS, DUMMY_INTERFACE, IncrementalPlan, Plan, PlanContext, SETS, VirtualServer, set_name,
};
use crate::reconcile::{Actual, DestKey, DiffOptions, Op, apply, diff, owned};

mod metrics;
pub use metrics::Metrics;

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
    planner: Option<IncrementalPlan>,
    initialized: bool,
    metrics: Metrics,
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
            planner: None,
            initialized: false,
            metrics: Metrics::default(),
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

    /// What this proxier counted so far (failures included).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The plan of the last successful sync.
    pub fn last_plan(&self) -> Option<&Plan> {
        self.planner.as_ref().map(IncrementalPlan::plan)
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

    /// The kernel's services of our family, with destinations for those we may touch.
    async fn read_all(&self, opts: &DiffOptions) -> Result<Actual> {
        let mut actual = Actual::new();
        let mut ours = Vec::new();
        for svc in self.ipvs.list_services().await? {
            if svc.family != self.family {
                continue;
            }
            if owned(&svc, opts) {
                ours.push(svc);
            } else {
                actual.insert(svc.key(), (svc, Vec::new()));
            }
        }
        let dests = self.ipvs.list_destinations_of(&ours).await?;
        for (svc, d) in ours.into_iter().zip(dests) {
            actual.insert(svc.key(), (svc, d));
        }
        Ok(actual)
    }

    async fn sync_inner(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> Result<SyncStats> {
        if !self.initialized {
            self.init().await;
        }
        // The plan: partial syncs re-plan only the ports the change set names, when the
        // node facts are those of the last plan; anything else plans in full. The old
        // planner is dropped unless this sync succeeds.
        let mut full = changes.full || self.cache.is_none();
        let mut facts = node.clone();
        let mut incremental = None;
        match self.planner.take() {
            Some(mut pl) if !full => {
                // Partial syncs trust that the link holds what the last sync bound.
                facts
                    .local_addresses
                    .retain(|a| !pl.plan().addresses.contains(a));
                let cx = PlanContext::new(&facts, &self.cfg, self.family);
                if *pl.context() == cx {
                    let names: Vec<ServicePortName> = changes
                        .added
                        .iter()
                        .chain(&changes.updated)
                        .chain(&changes.removed)
                        .filter(|(f, _)| *f == self.family)
                        .map(|(_, n)| n.clone())
                        .collect();
                    let delta = pl.update(map, &names);
                    incremental = Some((pl, delta));
                } else {
                    full = true;
                }
            }
            _ => full = true,
        }
        let (planner, delta, bound) = match incremental {
            Some((pl, delta)) => (pl, Some(delta), BTreeSet::new()),
            None => {
                // Full syncs read the link.
                self.exec
                    .ensure_dummy(DUMMY_INTERFACE)
                    .await
                    .inspect_err(|_| self.metrics.address_failures += 1)?;
                let bound = self
                    .exec
                    .list_addresses(DUMMY_INTERFACE, self.family)
                    .await?;
                let mut facts = node.clone();
                facts.local_addresses.retain(|a| !bound.contains(a));
                let cx = PlanContext::new(&facts, &self.cfg, self.family);
                (IncrementalPlan::new(map, cx), None, bound)
            }
        };
        let p = planner.plan();
        let mut written = 0;

        // 1. ipsets (the iptables rules below reference them). A failure stops the sync
        //    here, before IPVS: the kernel keeps the last good state whole.
        let ipset_text = match &delta {
            // The sets are as the last sync left them: add and delete the difference.
            Some(d) => {
                written += d.entries_added.len() + d.entries_removed.len();
                d.ipset_text(p)
            }
            None => {
                let existing = self.exec.ipset_names().await?;
                written += p.ipsets.len();
                crate::plan::ipset_restore_text(&p.ipsets, self.family, Some(&existing))
            }
        };
        if !ipset_text.is_empty() {
            self.exec
                .ipset_restore(&ipset_text)
                .await
                .inspect_err(|_| self.metrics.ipset_restore_failures += 1)?;
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
        let (mut actual, d) = match (&delta, self.cache.take()) {
            (Some(delta), Some(mut cache)) => {
                // Partial: the kernel is as the last successful sync left it (a failure
                // drops the cache), so only virtual servers whose plan changed, and
                // those draining, need a look. They are read again (connection counts,
                // and whatever else changed them); the rest is not even compared.
                let dirty = delta
                    .services
                    .iter()
                    .copied()
                    .chain(self.draining.keys().map(|(k, _)| *k))
                    .collect::<BTreeSet<ServiceKey>>();
                let svcs: Vec<crate::netlink::Service> = dirty
                    .iter()
                    .filter_map(|k| cache.get(k).map(|(s, _)| s.clone()))
                    .collect();
                let dests = self.ipvs.list_destinations_of(&svcs).await?;
                for (svc, d) in svcs.into_iter().zip(dests) {
                    cache.insert(svc.key(), (svc, d));
                }
                let have: Actual = dirty
                    .iter()
                    .filter_map(|k| cache.get(k).map(|v| (*k, v.clone())))
                    .collect();
                let want: BTreeMap<ServiceKey, VirtualServer> = dirty
                    .iter()
                    .filter_map(|k| p.services.get(k).map(|v| (*k, v.clone())))
                    .collect();
                let d = diff(&have, &want, &opts);
                (cache, d)
            }
            _ => {
                let actual = self.read_all(&opts).await?;
                let d = diff(&actual, &p.services, &opts);
                (actual, d)
            }
        };
        // Like upstream, one failing service does not stop the others: every op runs and
        // the first failure is reported at the end (the runner retries, in full).
        // Adds and updates first; then deletes and weight-0 updates, except for a
        // virtual server whose add or update failed: it keeps its old destinations
        // until a sync gets its new ones in.
        let mut failed = None;
        let (additive, destructive): (Vec<Op>, Vec<Op>) =
            d.ops.iter().cloned().partition(|op| !op.is_destructive());
        let mut broken: BTreeSet<ServiceKey> = BTreeSet::new();
        let results = self.ipvs.apply_ops(&additive).await;
        for (op, r) in additive.iter().zip(results) {
            match r {
                // The cache mirrors the kernel; an op the kernel took applies here too.
                Ok(()) => {
                    let _ = apply(&mut actual, op);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ipvs operation failed");
                    self.metrics.ipvs_failures += 1;
                    broken.insert(op.service().key());
                    failed.get_or_insert(e);
                }
            }
        }
        let (destructive, deferred): (Vec<Op>, Vec<Op>) = destructive
            .into_iter()
            .partition(|op| !broken.contains(&op.service().key()));
        if !deferred.is_empty() {
            tracing::warn!(
                ops = deferred.len(),
                services = broken.len(),
                "keeping old ipvs destinations of services whose update failed"
            );
            self.metrics.ipvs_deferred += deferred.len() as u64;
        }
        let results = self.ipvs.apply_ops(&destructive).await;
        for (op, r) in destructive.iter().zip(results) {
            match r {
                Ok(()) => {
                    let _ = apply(&mut actual, op);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ipvs operation failed");
                    self.metrics.ipvs_failures += 1;
                    failed.get_or_insert(e);
                }
            }
        }
        written += additive.len() + destructive.len();
        self.draining.retain(|k, _| d.draining.contains(k));
        for k in &d.draining {
            self.draining.entry(*k).or_insert(now);
        }
        self.cache = Some(actual);

        // 3. Bind the wanted addresses.
        let to_bind: Vec<IpAddr> = match &delta {
            Some(d) => d.addresses_added.clone(),
            None => p.addresses.difference(&bound).copied().collect(),
        };
        if !to_bind.is_empty() {
            self.exec
                .add_addresses(DUMMY_INTERFACE, &to_bind)
                .await
                .inspect_err(|_| self.metrics.address_failures += 1)?;
            written += to_bind.len();
        }

        // 4. Companion iptables rules, and the jumps to them on full syncs.
        if delta.as_ref().is_none_or(|d| d.iptables_changed) {
            self.exec
                .restore_iptables(self.family, &p.iptables)
                .await
                .inspect_err(|_| self.metrics.iptables_restore_failures += 1)?;
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
        let to_unbind: Vec<IpAddr> = match &delta {
            Some(d) => d.addresses_removed.clone(),
            None => bound.difference(&p.addresses).copied().collect(),
        };
        if !to_unbind.is_empty() {
            self.exec
                .del_addresses(DUMMY_INTERFACE, &to_unbind)
                .await
                .inspect_err(|_| self.metrics.address_failures += 1)?;
            written += to_unbind.len();
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
        self.planner = Some(planner);
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
        self.planner = None;
        self.draining.clear();
        first_err.map_or(Ok(()), Err)
    }
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
        let started = Instant::now();
        let r = self.sync_inner(map, changes, node).await;
        match &r {
            Ok(stats) => {
                if stats.full {
                    self.metrics.full_syncs += 1;
                } else {
                    self.metrics.partial_syncs += 1;
                }
                self.metrics.last_error = None;
                self.metrics.last_sync = started.elapsed();
            }
            Err(e) => {
                // Re-read everything next time: the kernel may hold half of this sync,
                // or more than the answers said (a lost ack), so the cache, the last
                // plan and the bound addresses are no longer known.
                self.cache = None;
                self.planner = None;
                self.metrics.sync_failures += 1;
                self.metrics.last_error = Some(error_chain(e));
                tracing::warn!(error = %error_chain(e), family = %self.family, "ipvs sync failed; the next sync reads the kernel again");
            }
        }
        r.map_err(backend)
    }

    async fn cleanup(&mut self) -> kproxy_core::Result<()> {
        self.cleanup_inner().await.map_err(backend)
    }
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
