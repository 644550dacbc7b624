//! Properties of map building and change tracking over generated clusters
//! (`kproxy_core::testing` strategies).

use std::collections::BTreeSet;

use kproxy_core::model::IpFamily;
use kproxy_core::snapshot::Object;
use kproxy_core::testing::{NODES, apply_events, arb_events, arb_objects, arb_snapshot};
use kproxy_core::{BuildOptions, ChangeSet, ChangeTracker, Event, ServiceMap, Snapshot};
use proptest::prelude::*;

fn opts() -> BuildOptions {
    BuildOptions::for_node(NODES[0])
}

/// Later objects replace earlier ones with the same key, so "order independence" is
/// about objects with distinct keys: keep the last of each key.
fn last_of_each_key(objects: Vec<Object>) -> Vec<Object> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<Object> = objects
        .into_iter()
        .rev()
        .filter(|o| seen.insert(o.key()))
        .collect();
    out.reverse();
    out
}

fn snapshot_of(objects: &[Object]) -> Snapshot {
    let mut s = Snapshot::new();
    for o in objects {
        s.apply(o.clone());
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// The map depends on the set of objects, not the order they arrived in.
    #[test]
    fn map_build_is_independent_of_input_order(objects in arb_objects(), seed in any::<u64>()) {
        let objects = last_of_each_key(objects);
        let mut shuffled = objects.clone();
        // A deterministic shuffle from the seed (Fisher-Yates with an LCG).
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let a = ServiceMap::build(&snapshot_of(&objects), &opts());
        let b = ServiceMap::build(&snapshot_of(&shuffled), &opts());
        prop_assert_eq!(a, b);
    }

    /// Applying events one by one through the tracker (with commits at random points)
    /// gives exactly the map a full rebuild of the final objects gives, and each
    /// commit's change set equals the difference between the maps it moved between.
    #[test]
    fn incremental_tracking_equals_full_rebuild(events in arb_events(), commit_mask in any::<u32>()) {
        let mut tracker = ChangeTracker::new(opts());
        let mut model = Snapshot::new();
        for (i, e) in events.iter().enumerate() {
            tracker.apply(e.clone());
            apply_events(&mut model, std::slice::from_ref(e));
            if commit_mask & (1 << (i % 32)) != 0 {
                let before = tracker.map().clone();
                let changes = tracker.commit();
                prop_assert_eq!(&changes, &ChangeSet::between(&before, tracker.map()));
                prop_assert_eq!(tracker.map(), &ServiceMap::build(&model, &opts()));
            }
        }
        tracker.commit();
        prop_assert_eq!(tracker.snapshot(), &model);
        prop_assert_eq!(tracker.map(), &ServiceMap::build(&model, &opts()));
    }

    /// Every selected endpoint belongs to the port and is eligible: cluster endpoints are
    /// ready (or, in the fallback, serving-terminating while nothing is ready); local
    /// endpoints run on this node; a port with nothing usable has `has_any_endpoints`
    /// false.
    #[test]
    fn selected_endpoints_are_eligible(snapshot in arb_snapshot()) {
        let map = ServiceMap::build(&snapshot, &opts());
        for p in map.iter() {
            let info = |a| p.endpoints.iter().find(|e| e.addr == a);
            for &a in &p.selection.cluster {
                let e = info(a).expect("cluster endpoint belongs to the port");
                prop_assert_eq!(IpFamily::of(&a.ip()), p.family);
                if p.selection.cluster_uses_terminating {
                    prop_assert!(e.conditions.serving && e.conditions.terminating);
                    prop_assert!(p.endpoints.iter().all(|e| !e.conditions.ready));
                } else {
                    prop_assert!(e.conditions.ready);
                }
            }
            for &a in &p.selection.local {
                let e = info(a).expect("local endpoint belongs to the port");
                prop_assert!(e.is_local, "Local selections hold only this node's endpoints");
                prop_assert_eq!(e.node_name.as_deref(), Some(NODES[0]));
                prop_assert!(e.conditions.ready || (e.conditions.serving && e.conditions.terminating));
            }
            if !p.uses_local_endpoints() {
                prop_assert!(p.selection.local.is_empty());
            }
            let usable = p.endpoints.iter().any(|e| e.conditions.ready || (e.conditions.serving && e.conditions.terminating));
            if p.uses_cluster_endpoints() {
                prop_assert_eq!(p.selection.has_any_endpoints, usable);
            }
            // Addresses are unique and sorted, so backends get a stable order.
            let mut sorted = p.endpoints.iter().map(|e| e.addr).collect::<Vec<_>>();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), p.endpoints.len());
            prop_assert!(p.selection.cluster.windows(2).all(|w| w[0] < w[1]));
        }
    }

    /// Same input, same output, down to the serialized bytes.
    #[test]
    fn map_build_is_deterministic(snapshot in arb_snapshot()) {
        let a = ServiceMap::build(&snapshot, &opts());
        let b = ServiceMap::build(&snapshot.clone(), &opts());
        let json = serde_json::to_string(&a).unwrap();
        prop_assert_eq!(&json, &serde_json::to_string(&b).unwrap());
        let back: ServiceMap = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &a);
        prop_assert_eq!(a, b);
    }

    /// Two change sets merged describe at least every port that changed across both,
    /// with the right kind: what a backend that skipped a sync must do.
    #[test]
    fn merged_change_sets_cover_the_combined_change(a in arb_snapshot(), b in arb_snapshot(), c in arb_snapshot()) {
        let (ma, mb, mc) = (ServiceMap::build(&a, &opts()), ServiceMap::build(&b, &opts()), ServiceMap::build(&c, &opts()));
        let mut merged = ChangeSet::between(&ma, &mb);
        merged.merge(ChangeSet::between(&mb, &mc));
        let direct = ChangeSet::between(&ma, &mc);
        for k in &direct.added { prop_assert!(merged.added.contains(k), "added {k:?}"); }
        for k in &direct.removed { prop_assert!(merged.removed.contains(k), "removed {k:?}"); }
        for k in &direct.updated { prop_assert!(merged.updated.contains(k), "updated {k:?}"); }
        // Nothing is both added and removed, and added/removed agree with the end states.
        for k in &merged.added { prop_assert!(mc.get(k.0, &k.1).is_some() && ma.get(k.0, &k.1).is_none()); }
        for k in &merged.removed { prop_assert!(ma.get(k.0, &k.1).is_some() && mc.get(k.0, &k.1).is_none()); }
        for f in &direct.stale_flows {
            // Every flow the direct diff would delete by endpoint is deleted by the merge too,
            // or the merge deletes every flow to that target.
            let covered = merged.stale_flows.iter().any(|m| m.target == f.target && m.protocol == f.protocol
                && (m.endpoint == f.endpoint || m.endpoint.is_none()));
            prop_assert!(covered || f.endpoint.is_none(), "stale flow {f:?} not covered");
        }
    }
}

#[test]
fn reset_replaces_everything_the_source_had() {
    let (snap, _) = Snapshot::from_documents(
        r#"
apiVersion: v1
kind: Service
metadata: { name: a, namespace: default }
spec: { clusterIP: 10.96.0.1, ports: [{ port: 80 }] }
"#,
    )
    .unwrap();
    let mut t = ChangeTracker::new(opts());
    for s in snap.services() {
        t.apply(Event::Apply(Object::Service(s.clone())));
    }
    assert_eq!(t.commit().added.len(), 1);
    t.apply(Event::Reset(Vec::new()));
    let changes = t.commit();
    assert_eq!(changes.removed.len(), 1);
    assert!(t.map().is_empty());
}
