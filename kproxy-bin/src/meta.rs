//! [`MetaProxier`]: one [`Proxier`] over several, as upstream's `metaproxier` runs one
//! proxier per IP family in dual-stack. Backends that program a single family (IPVS) are
//! wired in as one instance per family behind it.

use kproxy_core::{ChangeSet, NodeFacts, Proxier, ServiceMap, SyncStats};

/// Forwards every call to each inner proxier, in order.
pub struct MetaProxier {
    mode: &'static str,
    inner: Vec<Box<dyn Proxier>>,
}

impl MetaProxier {
    /// A proxier of `mode` driving each of `inner` (e.g. the IPv4 and the IPv6 one).
    pub fn new(mode: &'static str, inner: Vec<Box<dyn Proxier>>) -> Self {
        MetaProxier { mode, inner }
    }
}

#[async_trait::async_trait]
impl Proxier for MetaProxier {
    fn mode(&self) -> &'static str {
        self.mode
    }

    /// Syncs every inner proxier, even after one failed (the others stay current), and
    /// returns the first error. The runner then retries with a full sync, which the
    /// `Proxier` contract makes harmless for the ones that succeeded.
    async fn sync(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> kproxy_core::Result<SyncStats> {
        let mut total = SyncStats {
            full: changes.full,
            ..SyncStats::default()
        };
        let mut first_err = None;
        for p in &mut self.inner {
            match p.sync(map, changes, node).await {
                Ok(s) => {
                    total.ports_programmed += s.ports_programmed;
                    total.objects_written += s.objects_written;
                    total.flows_deleted += s.flows_deleted;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(total), Err)
    }

    /// Cleans up every inner proxier; returns the first error.
    async fn cleanup(&mut self) -> kproxy_core::Result<()> {
        let mut first_err = None;
        for p in &mut self.inner {
            if let Err(e) = p.cleanup().await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use kproxy_core::{ProxierCall, RecordingProxier};

    use super::*;

    #[tokio::test]
    async fn every_inner_proxier_syncs_even_when_one_fails() {
        let (v4, v6) = (RecordingProxier::default(), RecordingProxier::default());
        let mut meta = MetaProxier::new("ipvs", vec![Box::new(v4.clone()), Box::new(v6.clone())]);
        assert_eq!(meta.mode(), "ipvs");
        v4.fail_next_sync();
        let err = meta
            .sync(
                &ServiceMap::default(),
                &ChangeSet::full(),
                &NodeFacts::default(),
            )
            .await;
        assert!(err.is_err());
        assert_eq!(v6.calls().len(), 1, "the IPv6 proxier still synced");
        let ok = meta
            .sync(
                &ServiceMap::default(),
                &ChangeSet::full(),
                &NodeFacts::default(),
            )
            .await
            .unwrap();
        assert!(ok.full);
        meta.cleanup().await.unwrap();
        for p in [v4, v6] {
            assert!(matches!(p.calls().last(), Some(ProxierCall::Cleanup)));
        }
    }
}
