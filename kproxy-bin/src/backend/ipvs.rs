//! [`Exported`]: one family's IPVS proxier, with its plain [`kproxy_ipvs::Metrics`]
//! copied into the binary's registry after every sync, as the iptables backend's are.

use std::sync::Arc;

use kproxy_core::model::IpFamily;
use kproxy_core::{ChangeSet, NodeFacts, Proxier, ServiceMap, SyncStats};
use kproxy_ipvs::IpvsProxier;

use crate::metrics::Metrics;

/// An [`IpvsProxier`] whose failure counters reach `/metrics`.
pub struct Exported {
    inner: IpvsProxier,
    family: IpFamily,
    metrics: Arc<Metrics>,
}

impl Exported {
    /// Wraps `inner`, which programs `family`, exporting into `metrics`.
    pub fn new(inner: IpvsProxier, family: IpFamily, metrics: Arc<Metrics>) -> Self {
        Exported {
            inner,
            family,
            metrics,
        }
    }
}

#[async_trait::async_trait]
impl Proxier for Exported {
    fn mode(&self) -> &'static str {
        self.inner.mode()
    }

    /// Syncs, then exports the counters whether the sync failed or not.
    async fn sync(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> kproxy_core::Result<SyncStats> {
        let result = self.inner.sync(map, changes, node).await;
        self.metrics.ipvs_synced(self.family, self.inner.metrics());
        result
    }

    async fn cleanup(&mut self) -> kproxy_core::Result<()> {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use kproxy_core::{BuildOptions, KubeProxyConfiguration, Snapshot};
    use kproxy_ipvs::exec::{FailPoint, FakeIpvs, RecordingExecutor};

    use super::*;

    const SNAPSHOT: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  clusterIP: 10.96.0.20
  ports: [{ name: http, port: 80, protocol: TCP }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints: [{ addresses: [10.244.1.5], nodeName: node-b }]
"#;

    fn sample(text: &str, prefix: &str) -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    }

    /// A failed ipset restore and a failed iptables-restore each show under their
    /// counter (iptables' under upstream's name), and a good sync adds nothing.
    #[tokio::test]
    async fn ipvs_failures_reach_the_registry_under_their_names() {
        let (snap, _) = Snapshot::from_documents(SNAPSHOT).unwrap();
        let map = ServiceMap::build(&snap, &BuildOptions::for_node("node-a"));
        let node = NodeFacts::from_node("node-a", None);
        let exec = Arc::new(RecordingExecutor::default());
        let inner = IpvsProxier::new(
            &KubeProxyConfiguration::default(),
            IpFamily::V4,
            Arc::new(FakeIpvs::default()),
            exec.clone(),
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let mut p = Exported::new(inner, IpFamily::V4, metrics.clone());

        exec.fail_next(FailPoint::IpsetRestore);
        assert!(p.sync(&map, &ChangeSet::full(), &node).await.is_err());
        exec.fail_next(FailPoint::RestoreIptables);
        assert!(p.sync(&map, &ChangeSet::full(), &node).await.is_err());
        p.sync(&map, &ChangeSet::full(), &node).await.unwrap();

        let text = metrics.encode();
        let v4 = "{ip_family=\"IPv4\"}";
        for (name, want) in [
            ("kubeproxy_sync_proxy_rules_ipset_restore_failures_total", 1),
            (
                "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
                1,
            ),
            ("kubeproxy_sync_proxy_rules_ipvs_failures_total", 0),
        ] {
            assert_eq!(
                sample(&text, &format!("{name}{v4}")),
                Some(format!("{name}{v4} {want}")),
                "{text}"
            );
        }
    }
}
