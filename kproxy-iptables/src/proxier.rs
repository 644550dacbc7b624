//! [`IptablesProxier`]: the [`Proxier`] of iptables mode, gluing the planner to an
//! [`Executor`] (upstream `syncProxyRules`' control flow: full first, partial after,
//! full again after any failure; jump rules, canaries and the nfacct counters ensured
//! on full syncs; stale UDP/SCTP conntrack entries deleted after a successful restore,
//! including those of syncs that failed since the last success).
//!
//! A failed sync changes nothing kproxy knows about the kernel: `iptables-restore`
//! commits nothing on error (iptables-nft commits all tables at once; iptables-legacy
//! commits table by table, so a later table's failure can leave an earlier one
//! updated), and the next sync is full, which rewrites every table whatever happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kproxy_core::model::IpFamily;
use kproxy_core::{
    ChangeSet, FlowTarget, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, StaleFlow,
    SyncStats,
};

use crate::chains::{
    KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_POSTROUTING,
    KUBE_PROXY_CANARY, KUBE_PROXY_FIREWALL, KUBE_SERVICES, is_service_chain,
};
use crate::error::{Error, Result};
use crate::exec::{Executor, RestoreFlags, supports_random_fully};

/// Lines of per-service chains per restore with iptables-nft, whose restore time grows
/// much faster than its input (measured here: 4 200 lines take 0.1 s, ten times that
/// 6.3 s): about 100 services with 10 endpoints a batch. See `plan::Plan::batches`.
pub const NFT_RESTORE_BATCH_LINES: usize = 4000;
use crate::nfacct;
use crate::plan::{
    JUMP_RULES, KUBELET_JUMP_RULES, PlanConfig, PlanState, PlanStats, RuleCounts, Table, plan,
};

/// Counters and gauges of one family, for the binary to export under upstream's names
/// (`sync_proxy_rules_iptables_restore_failures_total`, `..._partial_restore_failures_total`,
/// `sync_proxy_rules_iptables_total`, `sync_proxy_rules_iptables_last`,
/// `sync_proxy_rules_no_local_endpoints_total`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Successful full syncs.
    pub full_syncs: u64,
    /// Successful partial syncs.
    pub partial_syncs: u64,
    /// Failed restores (full or partial).
    pub restore_failures: u64,
    /// Failed partial restores.
    pub partial_restore_failures: u64,
    /// Rules kproxy owns, per table.
    pub rules_total: RuleCounts,
    /// Rules written by the last restore, per table.
    pub rules_last: RuleCounts,
    /// Ports with internalTrafficPolicy Local and no local endpoint.
    pub no_local_internal: usize,
    /// Ports with externalTrafficPolicy Local and no local endpoint.
    pub no_local_external: usize,
    /// Duration of the last successful sync.
    pub last_sync: Duration,
    /// Conntrack flows deleted.
    pub conntrack_deleted: u64,
    /// Conntrack deletions that failed.
    pub conntrack_failures: u64,
}

#[derive(Debug)]
struct FamilyState {
    cfg: PlanConfig,
    state: Option<PlanState>,
    need_full: bool,
    probed: bool,
    metrics: Metrics,
    /// Stale flows of syncs that failed before deleting them: deleted by the next
    /// successful sync, whatever change set it is given.
    pending_flows: BTreeSet<StaleFlow>,
}

/// iptables mode: one ruleset per IP family, synced with `iptables-restore --noflush`.
#[derive(Debug)]
pub struct IptablesProxier<E: Executor> {
    exec: E,
    families: BTreeMap<IpFamily, FamilyState>,
    /// Whether the nfacct counters could not be created was already logged at warn.
    nfacct_warned: bool,
}

impl<E: Executor> IptablesProxier<E> {
    /// A proxier for `families` using `exec`. Fails on a config the planner cannot use.
    pub fn new(exec: E, cfg: &KubeProxyConfiguration, families: &[IpFamily]) -> Result<Self> {
        let mut map = BTreeMap::new();
        for f in families {
            let fs = FamilyState {
                cfg: PlanConfig::from_config(cfg, *f)?,
                state: None,
                need_full: true,
                probed: false,
                metrics: Metrics::default(),
                pending_flows: BTreeSet::new(),
            };
            map.insert(*f, fs);
        }
        Ok(IptablesProxier {
            exec,
            families: map,
            nfacct_warned: false,
        })
    }

    /// The nfacct counters the rules use (`nfacct::COUNTERS`, when the last full sync
    /// could create them) with their packet counts now, for upstream's
    /// `kubeproxy_iptables_*_packets_total`. A counter that cannot be read is left out
    /// (and logged at debug), as upstream's collector does.
    pub async fn nfacct_packets(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        if !self.families.values().any(|f| f.cfg.nfacct) {
            return out;
        }
        for name in nfacct::COUNTERS {
            match self.exec.read_nfacct(name).await {
                Ok(c) => {
                    out.insert(name, c.packets);
                }
                Err(e) => tracing::debug!(error = %e, "cannot read nfacct counter"),
            }
        }
        out
    }

    /// Upstream's full-sync `nfacct.Ensure` of both counters: true when both exist. When
    /// they cannot be created (no `nfnetlink_acct`, no permission) the rules go without
    /// `-m nfacct`; that is said once at warn, then at debug.
    async fn ensure_nfacct(&mut self) -> bool {
        for name in nfacct::COUNTERS {
            if let Err(e) = self.exec.ensure_nfacct(name).await {
                if self.nfacct_warned {
                    tracing::debug!(error = %e, "nfacct counters unavailable");
                } else {
                    tracing::warn!(error = %e, "nfacct counters unavailable: rules go without -m nfacct and the packet counters of INVALID drops and localhost node ports are not exported");
                    self.nfacct_warned = true;
                }
                return false;
            }
        }
        true
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.exec
    }

    /// The planner config of a family, to adjust what the host supports (`nfacct`).
    pub fn plan_config_mut(&mut self, family: IpFamily) -> Option<&mut PlanConfig> {
        self.families.get_mut(&family).map(|f| &mut f.cfg)
    }

    /// Makes the next sync full (the runner calls this every syncPeriod, and when the
    /// canary is gone).
    pub fn request_full_sync(&mut self) {
        for f in self.families.values_mut() {
            f.need_full = true;
        }
    }

    /// Whether the next sync of `family` will be full.
    pub fn needs_full_sync(&self, family: IpFamily) -> bool {
        self.families
            .get(&family)
            .is_none_or(|f| f.need_full || f.state.is_none())
    }

    /// The metrics of a family.
    pub fn metrics(&self, family: IpFamily) -> Option<&Metrics> {
        self.families.get(&family).map(|f| &f.metrics)
    }

    /// Whether the canary chain is still in the mangle table of `family` (upstream's
    /// `ipt.Monitor` polls the first table only). When it is gone someone flushed the
    /// tables: call [`request_full_sync`](Self::request_full_sync).
    pub async fn canary_present(&self, family: IpFamily) -> Result<bool> {
        self.exec
            .chain_exists(family, Table::Mangle, KUBE_PROXY_CANARY)
            .await
    }

    async fn ensure_base(&mut self, family: IpFamily) -> Result<()> {
        for j in JUMP_RULES.iter().chain(&KUBELET_JUMP_RULES) {
            self.exec.ensure_chain(family, j.table, j.to).await?;
            self.exec
                .ensure_rule(family, j.table, j.from, &j.args())
                .await?;
        }
        for t in [Table::Mangle, Table::Nat, Table::Filter] {
            self.exec.ensure_chain(family, t, KUBE_PROXY_CANARY).await?;
        }
        // Batched restores write per-service chains, which jump to KUBE-MARK-MASQ,
        // before the restore that writes it: it must exist (`-N` keeps its rule).
        self.exec
            .ensure_chain(family, Table::Nat, KUBE_MARK_MASQ)
            .await?;
        Ok(())
    }

    async fn sync_family(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
        family: IpFamily,
    ) -> Result<PlanStats> {
        let started = Instant::now();
        let Some(fs) = self.families.get(&family) else {
            return Ok(PlanStats::default());
        };
        let full = changes.full || fs.need_full || fs.state.is_none();
        let probed = fs.probed;
        if full && !probed {
            let version = self.exec.version(family).await.unwrap_or_default();
            if let Some(fs) = self.families.get_mut(&family) {
                fs.cfg.random_fully = supports_random_fully(&version);
                fs.cfg.restore_batch_lines = version
                    .contains("nf_tables")
                    .then_some(NFT_RESTORE_BATCH_LINES);
                fs.probed = true;
            }
        }
        let mut prev = self.families.get_mut(&family).and_then(|f| f.state.take());
        let result = self
            .apply(map, changes, node, family, full, &mut prev)
            .await;
        let fs = self
            .families
            .get_mut(&family)
            .ok_or_else(|| Error::Config {
                field: "families",
                reason: format!("{family} not configured"),
            })?;
        match result {
            Ok((stats, state)) => {
                fs.metrics.rules_total = state.rule_counts();
                (fs.metrics.no_local_internal, fs.metrics.no_local_external) =
                    state.no_local_endpoints();
                fs.metrics.rules_last = stats.written;
                fs.metrics.last_sync = started.elapsed();
                if full {
                    fs.metrics.full_syncs += 1;
                } else {
                    fs.metrics.partial_syncs += 1;
                }
                fs.state = Some(state);
                fs.need_full = false;
                Ok(stats)
            }
            Err(e) => {
                fs.metrics.restore_failures += 1;
                if !full {
                    fs.metrics.partial_restore_failures += 1;
                }
                fs.pending_flows.extend(
                    changes
                        .stale_flows
                        .iter()
                        .filter(|f| f.family == family)
                        .copied(),
                );
                // The kernel holds the previous rules (or a mix, if one table committed):
                // only a full sync knows how to get back.
                fs.state = prev;
                fs.need_full = true;
                Err(e)
            }
        }
    }

    async fn apply(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
        family: IpFamily,
        full: bool,
        prev: &mut Option<PlanState>,
    ) -> Result<(PlanStats, PlanState)> {
        if full {
            let nfacct = self.ensure_nfacct().await;
            if let Some(fs) = self.families.get_mut(&family) {
                fs.cfg.nfacct = nfacct;
            }
        }
        let cfg = self
            .families
            .get(&family)
            .map(|f| f.cfg.clone())
            .unwrap_or_else(|| PlanConfig::defaults(family));
        if full {
            self.ensure_base(family).await?;
            let saved = self.exec.save(family, Table::Nat).await?;
            let chains = chains_in_save(&saved);
            match prev {
                Some(p) => p.add_leftovers(chains),
                None => *prev = Some(PlanState::from_saved_chains(family, chains)),
            }
        }
        let cs;
        let changes = if full && !changes.full {
            cs = ChangeSet {
                full: true,
                ..changes.clone()
            };
            &cs
        } else {
            changes
        };
        let p = plan(map, changes, node, &cfg, family, prev.as_ref());
        if !p.is_noop() {
            // Batches first (iptables-nft only), then the rest; see `Plan::batches`.
            for text in p.restores() {
                self.exec
                    .restore(family, text, RestoreFlags::default())
                    .await?;
            }
        }
        let stats = p.stats;
        let state = p.into_state(prev.take());
        self.clean_conntrack(map, changes, family).await;
        Ok((stats, state))
    }

    async fn clean_conntrack(&mut self, map: &ServiceMap, changes: &ChangeSet, family: IpFamily) {
        let mut deleted = 0u64;
        let mut failed = 0u64;
        // This sync's stale flows, and those of failed syncs since the last success
        // unless their endpoint serves the flow's target again.
        let carried = self
            .families
            .get_mut(&family)
            .map(|f| std::mem::take(&mut f.pending_flows))
            .unwrap_or_default();
        let mut flows: BTreeSet<StaleFlow> = carried
            .into_iter()
            .filter(|f| !served_again(map, f))
            .collect();
        flows.extend(
            changes
                .stale_flows
                .iter()
                .filter(|f| f.family == family)
                .copied(),
        );
        for flow in &flows {
            match self.exec.delete_flows(flow).await {
                Ok(n) => deleted += n as u64,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, ?flow, "failed to delete stale conntrack entries");
                }
            }
        }
        if let Some(fs) = self.families.get_mut(&family) {
            fs.metrics.conntrack_deleted += deleted;
            fs.metrics.conntrack_failures += failed;
        }
    }

    async fn cleanup_family(&mut self, family: IpFamily) -> Result<()> {
        let mut first_err = None;
        for table in [Table::Nat, Table::Filter, Table::Mangle] {
            let saved = self.exec.save(family, table).await?;
            let text = cleanup_text(table, &saved);
            if text.lines().count() <= 2 {
                continue;
            }
            if let Err(e) = self
                .exec
                .restore(family, &text, RestoreFlags::default())
                .await
            {
                first_err.get_or_insert(e);
            }
        }
        if let Some(fs) = self.families.get_mut(&family) {
            fs.state = None;
            fs.need_full = true;
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Whether `flow`'s endpoint is again among the endpoints of the port it targets.
fn served_again(map: &ServiceMap, flow: &StaleFlow) -> bool {
    let Some(ep) = flow.endpoint else {
        return false;
    };
    map.family(flow.family).values().any(|p| {
        let targets = match flow.target {
            FlowTarget::Vip { ip, port } => {
                p.port == port
                    && (p.cluster_ip == ip
                        || p.external_ips.contains(&ip)
                        || p.load_balancer_ips.contains(&ip))
            }
            FlowTarget::NodePort(np) => p.node_port == Some(np),
        };
        targets
            && p.name.protocol == flow.protocol
            && p.selection
                .cluster
                .iter()
                .chain(&p.selection.local)
                .any(|a| a.ip() == ep)
    })
}

/// Chains kube-proxy's modes create, per table, that cleanup removes when present:
/// iptables mode's (upstream `CleanupLeftovers`, plus KUBE-MARK-MASQ,
/// KUBE-PROXY-FIREWALL and the canary), and the leftovers of ipvs mode
/// (`pkg/proxy/ipvs/proxier.go`) and the old userspace mode. Kubelet's KUBE-FIREWALL and
/// KUBE-MARK-DROP are never touched.
fn owned_chains(table: Table) -> &'static [&'static str] {
    match table {
        Table::Nat => &[
            KUBE_SERVICES,
            KUBE_NODEPORTS,
            KUBE_POSTROUTING,
            KUBE_MARK_MASQ,
            KUBE_PROXY_CANARY,
            "KUBE-NODE-PORT",
            "KUBE-LOAD-BALANCER",
            "KUBE-PORTALS-CONTAINER",
            "KUBE-PORTALS-HOST",
            "KUBE-NODEPORT-CONTAINER",
            "KUBE-NODEPORT-HOST",
        ],
        Table::Filter => &[
            KUBE_SERVICES,
            KUBE_EXTERNAL_SERVICES,
            KUBE_FORWARD,
            KUBE_NODEPORTS,
            KUBE_PROXY_FIREWALL,
            KUBE_PROXY_CANARY,
            "KUBE-NODE-PORT",
            "KUBE-SOURCE-RANGES-FIREWALL",
            "KUBE-IPVS-FILTER",
            "KUBE-IPVS-OUT-FILTER",
            "KUBE-NODEPORT-NON-LOCAL",
        ],
        Table::Mangle => &[KUBE_PROXY_CANARY],
    }
}

/// One restore that removes everything kproxy (or an earlier kube-proxy mode) left in
/// `table`, given its `iptables-save` output: the rules in built-in chains that jump to
/// those chains (`-D` with the saved spec), then the chains themselves (flush, `-X`).
pub fn cleanup_text(table: Table, saved: &str) -> String {
    let present = chains_in_save(saved);
    let mut chains: Vec<&str> = owned_chains(table)
        .iter()
        .copied()
        .filter(|c| present.iter().any(|p| p == c))
        .collect();
    if table == Table::Nat {
        chains.extend(
            present
                .iter()
                .map(String::as_str)
                .filter(|c| is_service_chain(c)),
        );
    }
    let mut out = format!("*{table}\n");
    for c in &chains {
        out.push_str(&format!(":{c} - [0:0]\n"));
    }
    for l in saved.lines() {
        let Some(rest) = l.strip_prefix("-A ") else {
            continue;
        };
        let builtin = rest
            .split_whitespace()
            .next()
            .is_some_and(|c| c.chars().all(|ch| ch.is_ascii_uppercase()));
        let target = rest.split_whitespace().skip_while(|w| *w != "-j").nth(1);
        if builtin && target.is_some_and(|t| chains.contains(&t)) {
            out.push_str(&format!("-D {rest}\n"));
        }
    }
    for c in &chains {
        out.push_str(&format!("-X {c}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// The chain names declared in `iptables-save` output.
pub fn chains_in_save(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn backend_err(e: Error) -> kproxy_core::Error {
    kproxy_core::Error::Backend {
        mode: "iptables",
        source: Box::new(e),
    }
}

#[async_trait::async_trait]
impl<E: Executor> Proxier for IptablesProxier<E> {
    fn mode(&self) -> &'static str {
        "iptables"
    }

    async fn sync(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> kproxy_core::Result<SyncStats> {
        let families: Vec<IpFamily> = self.families.keys().copied().collect();
        let mut out = SyncStats {
            full: false,
            ports_programmed: 0,
            objects_written: 0,
            flows_deleted: 0,
        };
        let mut first_err = None;
        for family in families {
            let before = self.metrics(family).map_or(0, |m| m.conntrack_deleted);
            let full = changes.full || self.needs_full_sync(family);
            match self.sync_family(map, changes, node, family).await {
                Ok(stats) => {
                    out.full |= full;
                    out.ports_programmed += stats.ports_programmed;
                    out.objects_written += stats.written.filter + stats.written.nat;
                    let after = self.metrics(family).map_or(0, |m| m.conntrack_deleted);
                    out.flows_deleted += usize::try_from(after - before).unwrap_or(usize::MAX);
                }
                Err(e) => {
                    tracing::error!(%family, error = %e, "iptables sync failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(backend_err(e)),
            None => Ok(out),
        }
    }

    async fn cleanup(&mut self) -> kproxy_core::Result<()> {
        let families: Vec<IpFamily> = self.families.keys().copied().collect();
        let mut first_err = None;
        for f in families {
            if let Err(e) = self.cleanup_family(f).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), |e| Err(backend_err(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_removes_leftovers_of_every_mode_and_nothing_else() {
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n:KUBE-MARK-DROP - [0:0]\n\
            :KUBE-PORTALS-CONTAINER - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SEP-ABC - [0:0]\n\
            -A PREROUTING -m comment --comment \"handle ClusterIPs; NOTE: this must be before the NodePort rules\" -j KUBE-PORTALS-CONTAINER\n\
            -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
            -A PREROUTING -j DOCKER\n-A OUTPUT -j KUBE-MARK-DROP\n-A KUBE-SERVICES -j KUBE-SEP-ABC\nCOMMIT\n";
        let text = cleanup_text(Table::Nat, saved);
        assert!(text.contains(
            "-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
        ));
        assert!(text.contains("-D PREROUTING -m comment --comment \"handle ClusterIPs; NOTE: this must be before the NodePort rules\" -j KUBE-PORTALS-CONTAINER\n"));
        for gone in ["KUBE-PORTALS-CONTAINER", "KUBE-SERVICES", "KUBE-SEP-ABC"] {
            assert!(
                text.contains(&format!(":{gone} - [0:0]\n"))
                    && text.contains(&format!("-X {gone}\n")),
                "{gone}"
            );
        }
        assert!(
            !text.contains("DOCKER") && !text.contains("KUBE-MARK-DROP"),
            "{text}"
        );
        assert_eq!(
            cleanup_text(Table::Mangle, "*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"),
            "*mangle\nCOMMIT\n"
        );
    }
}
