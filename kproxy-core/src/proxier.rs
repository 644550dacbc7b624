//! The [`Proxier`] trait every backend implements, and [`RecordingProxier`], an in-memory
//! implementation for tests (yours too: vendors can drive their code against it).

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::change::ChangeSet;
use crate::error::{Error, Result};
use crate::service_map::{NodeFacts, ServiceMap};

/// What one sync did, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStats {
    /// Whether everything was rewritten (as opposed to only the changed ports).
    pub full: bool,
    /// Service ports programmed in this sync.
    pub ports_programmed: usize,
    /// Backend objects written (iptables rules, IPVS services and destinations, listeners).
    pub objects_written: usize,
    /// Conntrack flows deleted after the sync.
    pub flows_deleted: usize,
}

/// A proxy backend: makes the kernel (or a userspace proxy) match a [`ServiceMap`].
///
/// The runner in `kproxy-bin` calls [`sync`](Proxier::sync) with the current map and the
/// changes since the last **successful** sync (a full change set first, and after any
/// failure). Contract:
/// - a failed sync returns an error and leaves whatever was last applied working: no
///   half-applied state, no flushed rules;
/// - `sync` with the same map twice is harmless;
/// - [`cleanup`](Proxier::cleanup) removes everything the backend could ever have
///   installed, including leftovers of an earlier process.
///
/// ```
/// use kproxy_core::{ChangeSet, NodeFacts, Proxier, RecordingProxier, ServiceMap};
/// # tokio_test_block(async {
/// let mut p = RecordingProxier::default();
/// let map = ServiceMap::default();
/// p.sync(&map, &ChangeSet::full(), &NodeFacts::default()).await.unwrap();
/// assert_eq!(p.calls().len(), 1);
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait::async_trait]
pub trait Proxier: Send {
    /// The mode's name as `--proxy-mode` spells it (`iptables`, `ipvs`, `userspace`).
    fn mode(&self) -> &'static str;

    /// Makes the data path match `map`. With `changes.full == false` only the ports in
    /// `changes` need work.
    async fn sync(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> Result<SyncStats>;

    /// Removes everything this mode may have installed.
    async fn cleanup(&mut self) -> Result<()>;
}

/// One call a [`RecordingProxier`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
// A recorder for tests: keeping the map inline keeps matching on it simple.
#[allow(clippy::large_enum_variant)]
pub enum ProxierCall {
    /// A sync, with what it was given.
    Sync {
        /// The map.
        map: ServiceMap,
        /// The change set.
        changes: ChangeSet,
        /// The node facts.
        node: NodeFacts,
    },
    /// A cleanup.
    Cleanup,
}

/// A [`Proxier`] that records its calls. Clones share the record, so a test can keep one
/// clone and hand the other to the code under test. `fail_next_sync` makes the next sync
/// fail (it is still recorded), to test that callers retry with a full sync.
#[derive(Debug, Clone, Default)]
pub struct RecordingProxier {
    state: Arc<Mutex<RecordingState>>,
}

#[derive(Debug, Default)]
struct RecordingState {
    calls: Vec<ProxierCall>,
    fail_next_sync: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
struct InjectedFailure;

impl RecordingProxier {
    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<ProxierCall> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .calls
            .clone()
    }

    /// The map of the most recent sync call (successful or not), if any.
    pub fn last_map(&self) -> Option<ServiceMap> {
        self.calls().into_iter().rev().find_map(|c| match c {
            ProxierCall::Sync { map, .. } => Some(map),
            ProxierCall::Cleanup => None,
        })
    }

    /// Makes the next sync return an error.
    pub fn fail_next_sync(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fail_next_sync = true;
    }
}

#[async_trait::async_trait]
impl Proxier for RecordingProxier {
    fn mode(&self) -> &'static str {
        "recording"
    }

    async fn sync(
        &mut self,
        map: &ServiceMap,
        changes: &ChangeSet,
        node: &NodeFacts,
    ) -> Result<SyncStats> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.calls.push(ProxierCall::Sync {
            map: map.clone(),
            changes: changes.clone(),
            node: node.clone(),
        });
        if std::mem::take(&mut st.fail_next_sync) {
            return Err(Error::Backend {
                mode: "recording",
                source: Box::new(InjectedFailure),
            });
        }
        Ok(SyncStats {
            full: changes.full,
            ports_programmed: if changes.full {
                map.len()
            } else {
                changes.added.len() + changes.updated.len()
            },
            objects_written: 0,
            flows_deleted: 0,
        })
    }

    async fn cleanup(&mut self) -> Result<()> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .calls
            .push(ProxierCall::Cleanup);
        Ok(())
    }
}
