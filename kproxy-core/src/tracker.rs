//! [`ChangeTracker`]: keeps a [`ServiceMap`] up to date from object events, rebuilding
//! only the services an event touched.

use std::collections::BTreeSet;

use crate::change::{ChangeSet, record_service};
use crate::model::{Node, ObjectRef};
use crate::service_map::{BuildOptions, ServiceMap, build_service};
use crate::snapshot::{Object, ObjectKey, Snapshot};

/// One change from a source (a Kubernetes watch or a snapshot file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An object was added or modified.
    Apply(Object),
    /// An object was deleted.
    Delete(ObjectKey),
    /// The source relisted: these objects are now all there is.
    Reset(Vec<Object>),
}

/// Applies [`Event`]s to a [`Snapshot`] and, on [`commit`](ChangeTracker::commit),
/// brings its [`ServiceMap`] up to date, returning what changed.
///
/// The invariant, property-tested: after any event sequence, `map()` equals
/// `ServiceMap::build(snapshot(), opts)`.
///
/// ```
/// use kproxy_core::{BuildOptions, ChangeTracker, Event, Object, Snapshot};
/// let (snap, _) = Snapshot::from_documents(r#"
/// kind: Service
/// apiVersion: v1
/// metadata: { name: dns, namespace: kube-system }
/// spec: { clusterIP: 10.96.0.10, ports: [{ name: dns, port: 53, protocol: UDP }] }
/// "#).unwrap();
/// let mut tracker = ChangeTracker::new(BuildOptions::for_node("n1"));
/// for svc in snap.services() {
///     tracker.apply(Event::Apply(Object::Service(svc.clone())));
/// }
/// let changes = tracker.commit();
/// assert_eq!(changes.added.len(), 1);
/// assert_eq!(tracker.map().len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct ChangeTracker {
    opts: BuildOptions,
    snapshot: Snapshot,
    map: ServiceMap,
    dirty: BTreeSet<ObjectRef>,
    all_dirty: bool,
}

impl ChangeTracker {
    /// An empty tracker for the node in `opts`.
    pub fn new(opts: BuildOptions) -> Self {
        let map = ServiceMap::build(&Snapshot::new(), &opts);
        ChangeTracker {
            opts,
            snapshot: Snapshot::new(),
            map,
            dirty: BTreeSet::new(),
            all_dirty: false,
        }
    }

    /// The options the map is built with.
    pub fn options(&self) -> &BuildOptions {
        &self.opts
    }

    /// The objects as of the last event.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The map as of the last [`commit`](ChangeTracker::commit).
    pub fn map(&self) -> &ServiceMap {
        &self.map
    }

    /// Whether events arrived since the last commit.
    pub fn has_pending(&self) -> bool {
        self.all_dirty || !self.dirty.is_empty()
    }

    /// Number of services touched since the last commit (for the pending-changes gauges).
    pub fn pending_services(&self) -> usize {
        if self.all_dirty {
            self.snapshot.services().count()
        } else {
            self.dirty.len()
        }
    }

    /// Records an event; the map changes at the next commit.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Apply(obj) => {
                self.touch(Some(&obj));
                let old = self.snapshot.apply(obj);
                self.touch(old.as_ref());
            }
            Event::Delete(key) => {
                let old = self.snapshot.delete(&key);
                self.touch(old.as_ref());
            }
            Event::Reset(objects) => {
                let mut snap = Snapshot::new();
                for o in objects {
                    snap.apply(o);
                }
                self.snapshot = snap;
                self.all_dirty = true;
            }
        }
    }

    /// Marks what an object (old or new version) affects.
    fn touch(&mut self, obj: Option<&Object>) {
        match obj {
            None => {}
            Some(Object::Service(s)) => {
                self.dirty.insert(s.id.clone());
            }
            Some(Object::EndpointSlice(s)) => {
                self.dirty.insert(s.service.clone());
            }
            Some(Object::Node(n)) => {
                // Only this node's zone feeds the map (topology hints).
                if n.name == self.opts.node_name
                    && self.snapshot.node(&n.name).and_then(Node::zone) != n.zone()
                {
                    self.all_dirty = true;
                }
                if n.name == self.opts.node_name && self.snapshot.node(&n.name).is_none() {
                    self.all_dirty = true;
                }
            }
        }
    }

    /// Brings the map up to date and returns what changed since the last commit.
    pub fn commit(&mut self) -> ChangeSet {
        let mut cs = ChangeSet::default();
        if self.all_dirty {
            let new = ServiceMap::build(&self.snapshot, &self.opts);
            cs = ChangeSet::between(&self.map, &new);
            self.map = new;
        } else {
            let zone = self
                .snapshot
                .node(&self.opts.node_name)
                .and_then(Node::zone)
                .map(str::to_owned);
            for id in std::mem::take(&mut self.dirty) {
                let ports = match self.snapshot.service(&id) {
                    Some(svc) => build_service(
                        svc,
                        self.snapshot.slices_of(&id),
                        &self.opts,
                        zone.as_deref(),
                    ),
                    None => Vec::new(),
                };
                let old = self.map.replace_service(&id, ports.clone());
                record_service(&mut cs, old, &ports);
            }
            cs.finish();
        }
        self.dirty.clear();
        self.all_dirty = false;
        cs
    }
}
