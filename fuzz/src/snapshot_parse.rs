//! `snapshot_parse`: Kubernetes YAML/JSON documents into a [`Snapshot`].

use kproxy_core::snapshot::Object;
use kproxy_core::{BuildOptions, ChangeTracker, Event, ServiceMap, Snapshot};

use crate::check;

/// Parses `data` as snapshot documents. It never panics; every problem names its
/// document or its object and field; what converts keeps the model's invariants; and
/// the snapshot builds a map (for its first node, or a node it does not know) with
/// eligible selections, equal to what a [`ChangeTracker`] fed the same objects builds.
pub fn snapshot_parse(data: &[u8]) {
    let text = crate::text(data);
    let (snap, problems) = match Snapshot::from_documents(&text) {
        Ok(parsed) => parsed,
        Err(e) => {
            check::object_error(&e);
            return;
        }
    };
    for p in &problems {
        check::object_error(p);
    }
    let objects: Vec<Object> = snap
        .services()
        .cloned()
        .map(Object::Service)
        .chain(snap.slices().cloned().map(Object::EndpointSlice))
        .chain(snap.nodes().cloned().map(Object::Node))
        .collect();
    for o in &objects {
        check::object(o);
    }
    for slice in snap.slices() {
        assert!(
            snap.slices_of(&slice.service).any(|s| s.id == slice.id),
            "slice {} is not indexed under its service",
            slice.id
        );
    }

    let node = snap.nodes().next().map_or("node-a", |n| n.name.as_str());
    let opts = BuildOptions::for_node(node);
    let map = ServiceMap::build(&snap, &opts);
    check::map(&map);

    let mut tracker = ChangeTracker::new(opts);
    for o in objects {
        tracker.apply(Event::Apply(o));
    }
    tracker.commit();
    assert_eq!(tracker.snapshot(), &snap, "the tracker's snapshot differs");
    assert_eq!(
        tracker.map(),
        &map,
        "the tracker's map differs from a full build"
    );
}
