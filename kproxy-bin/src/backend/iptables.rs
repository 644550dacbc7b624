//! [`Exported`]: the iptables proxier, with its plain [`kproxy_iptables::Metrics`] copied
//! into the binary's registry after every sync (the `Proxier` trait has no metrics hook,
//! and core stays free of Prometheus).

use std::sync::Arc;

use kproxy_core::model::IpFamily;
use kproxy_core::{ChangeSet, NodeFacts, Proxier, ServiceMap, SyncStats};
use kproxy_iptables::{Executor, IptablesProxier};

use crate::metrics::Metrics;

/// An [`IptablesProxier`] whose counters reach `/metrics` under upstream's names.
pub struct Exported<E: Executor> {
    inner: IptablesProxier<E>,
    families: Vec<IpFamily>,
    metrics: Arc<Metrics>,
}

impl<E: Executor> Exported<E> {
    /// Wraps `inner`, which programs `families`, exporting into `metrics`.
    pub fn new(inner: IptablesProxier<E>, families: Vec<IpFamily>, metrics: Arc<Metrics>) -> Self {
        Exported {
            inner,
            families,
            metrics,
        }
    }

    /// The wrapped proxier.
    #[cfg(test)]
    pub fn inner(&self) -> &IptablesProxier<E> {
        &self.inner
    }

    fn export(&self) {
        for f in &self.families {
            if let Some(m) = self.inner.metrics(*f) {
                self.metrics.iptables_synced(*f, m);
            }
        }
    }
}

#[async_trait::async_trait]
impl<E: Executor> Proxier for Exported<E> {
    fn mode(&self) -> &'static str {
        self.inner.mode()
    }

    /// Checks the canary, syncs, then exports the counters whether the sync failed or
    /// not (failures are what `restore_failures_total` counts), and the nfacct packet
    /// counters read from the kernel.
    async fn sync(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> kproxy_core::Result<SyncStats> {
        for &family in &self.families {
            // Upstream's ipt.Monitor: once a sync has put KUBE-PROXY-CANARY in place, its
            // absence means another program flushed the tables, so a partial sync would
            // build on rules that are gone. (A failed check proves nothing: the sync
            // itself will report a broken iptables.)
            if !self.inner.needs_full_sync(family)
                && matches!(self.inner.canary_present(family).await, Ok(false))
            {
                tracing::warn!(%family, "KUBE-PROXY-CANARY is gone, the tables were flushed: syncing in full");
                self.inner.request_full_sync();
            }
        }
        let result = self.inner.sync(map, changes, node).await;
        self.export();
        let packets = self.inner.nfacct_packets().await;
        self.metrics.iptables_nfacct(&packets);
        result
    }

    async fn cleanup(&mut self) -> kproxy_core::Result<()> {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use kproxy_core::{BuildOptions, KubeProxyConfiguration, Snapshot};
    use kproxy_iptables::exec::fake::RecordingExecutor;

    use super::*;

    const SNAPSHOT: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  clusterIP: 10.96.0.20
  type: LoadBalancer
  externalTrafficPolicy: Local
  ports: [{ name: http, port: 80, protocol: TCP, nodePort: 30080 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints: [{ addresses: [10.244.1.5], nodeName: node-b }]
"#;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
    }

    /// The map of `SNAPSHOT` on node-a and an IPv4 proxier over a recording executor.
    fn setup() -> (
        ServiceMap,
        NodeFacts,
        Exported<RecordingExecutor>,
        Arc<Metrics>,
    ) {
        let cfg = KubeProxyConfiguration::default();
        let (snapshot, _) = Snapshot::from_documents(SNAPSHOT).unwrap();
        let map = ServiceMap::build(&snapshot, &BuildOptions::for_node("node-a"));
        let node = NodeFacts::from_node("node-a", None);
        let families = vec![IpFamily::V4];
        let inner = IptablesProxier::new(RecordingExecutor::new(), &cfg, &families).unwrap();
        let metrics = Arc::new(Metrics::new());
        (
            map,
            node,
            Exported::new(inner, families, metrics.clone()),
            metrics,
        )
    }

    #[tokio::test]
    async fn a_flushed_table_is_noticed_by_its_missing_canary_and_rewritten_in_full() {
        let (map, node, mut p, _) = setup();
        p.sync(&map, &ChangeSet::full(), &node).await.unwrap();
        let full_syncs =
            |p: &Exported<RecordingExecutor>| p.inner().metrics(IpFamily::V4).map(|m| m.full_syncs);
        assert_eq!(full_syncs(&p), Some(1));

        // Nothing changed and nothing was flushed: the next sync stays partial.
        p.sync(&map, &ChangeSet::default(), &node).await.unwrap();
        assert_eq!(full_syncs(&p), Some(1));

        // Another program flushes every table: the canary goes with them.
        p.inner()
            .executor()
            .set_model(IpFamily::V4, Default::default());
        p.sync(&map, &ChangeSet::default(), &node).await.unwrap();
        assert_eq!(full_syncs(&p), Some(2));
        let restored = p.inner().executor().model(IpFamily::V4);
        assert!(
            format!("{restored:?}").contains("KUBE-SVC-"),
            "a full sync rewrote the service chains"
        );
    }

    #[tokio::test]
    async fn counters_follow_each_sync_including_failed_ones() {
        let (map, node, mut p, metrics) = setup();
        assert_eq!(p.mode(), "iptables");

        p.sync(&map, &ChangeSet::full(), &node).await.unwrap();
        let text = metrics.encode();
        let nat_total = line(
            &text,
            "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\",ip_family=\"IPv4\"} ",
        );
        assert_ne!(nat_total.rsplit(' ').next(), Some("0"), "{nat_total}");
        line(
            &text,
            "kubeproxy_sync_proxy_rules_iptables_last{table=\"filter\",ip_family=\"IPv4\"} ",
        );
        assert!(text.contains(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 0\n"
        ));
        assert!(text.contains(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\",ip_family=\"IPv4\"} 1\n"
        ));

        // A failed partial sync counts in both failure counters; the retry (full, as
        // after any failure) fails too and counts once more in the first: the counters
        // are cumulative, not overwritten.
        let mut partial = ChangeSet::default();
        partial.updated.extend(
            map.family(IpFamily::V4)
                .keys()
                .map(|n| (IpFamily::V4, n.clone())),
        );
        for _ in 0..2 {
            p.inner().executor().fail_next.store(true, Ordering::SeqCst);
            assert!(p.sync(&map, &partial, &node).await.is_err());
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family=\"IPv4\"} 1\n"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn nfacct_packet_counters_are_read_after_each_sync() {
        let (map, node, mut p, metrics) = setup();
        p.sync(&map, &ChangeSet::full(), &node).await.unwrap();
        let text = metrics.encode();
        assert!(
            text.contains("kubeproxy_iptables_localhost_nodeports_accepted_packets_total 0\n"),
            "{text}"
        );
        p.inner()
            .executor()
            .set_nfacct("ct_state_invalid_dropped_pkts", 4, 240);
        p.inner()
            .executor()
            .set_nfacct("localhost_nps_accepted_pkts", 2, 120);
        p.sync(&map, &ChangeSet::default(), &node).await.unwrap();
        let text = metrics.encode();
        assert!(
            text.contains("kubeproxy_iptables_ct_state_invalid_dropped_packets_total 4\n"),
            "{text}"
        );
        assert!(
            text.contains("kubeproxy_iptables_localhost_nodeports_accepted_packets_total 2\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn without_nfacct_no_packet_counter_is_exported() {
        let (map, node, mut p, metrics) = setup();
        p.inner().executor().no_nfacct.store(true, Ordering::SeqCst);
        p.sync(&map, &ChangeSet::full(), &node).await.unwrap();
        let text = metrics.encode();
        assert!(
            !text.contains("kubeproxy_iptables_ct_state_invalid_dropped_packets_total "),
            "{text}"
        );
    }
}
