//! Fault tolerance (issue 8): a sync that fails midway, wherever that is, keeps every
//! virtual server and destination that worked before and is still wanted, reports the
//! failure (an error and the [`Metrics`] counters), and the next sync, with no fault,
//! reads the kernel again and reaches exactly the plan.
//!
//! Faults come from the fakes: [`FakeIpvs`] refuses the n-th IPVS write, or carries it
//! out and loses the answer, or refuses everything from some write on (a dead socket),
//! or everything about one virtual server (as for a scheduler the kernel lacks);
//! [`RecordingExecutor`] fails `ipset restore`, `iptables-restore` or an address bind.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use kproxy_core::model::IpFamily;
use kproxy_core::testing::arb_snapshot;
use kproxy_core::{BuildOptions, ChangeSet, NodeFacts, Proxier, ServiceMap, Snapshot};
use proptest::prelude::*;

use super::*;
use crate::exec::{FailPoint, FakeIpvs, Fault, RecordingExecutor};
use crate::plan::plan;
use crate::plan::tests::{EXAMPLE, cfg, map_of, node};

struct Rig {
    ipvs: Arc<FakeIpvs>,
    exec: Arc<RecordingExecutor>,
    p: IpvsProxier,
}

impl Rig {
    /// A proxier that has synced `map` successfully.
    async fn synced(map: &ServiceMap, node: &NodeFacts) -> Rig {
        let ipvs = Arc::new(FakeIpvs::default());
        let exec = Arc::new(RecordingExecutor::default());
        let mut p = IpvsProxier::new(&cfg(), IpFamily::V4, ipvs.clone(), exec.clone()).unwrap();
        p.sync(map, &ChangeSet::full(), node).await.unwrap();
        ipvs.clear_ops();
        Rig { ipvs, exec, p }
    }

    /// Kernel, link and ipsets hold exactly the last plan.
    fn assert_converged(&self) {
        let plan = self.p.last_plan().expect("a successful sync");
        let state = self.ipvs.state();
        assert_eq!(
            state.keys().collect::<Vec<_>>(),
            plan.services.keys().collect::<Vec<_>>()
        );
        for (k, vs) in &plan.services {
            let (s, dests) = &state[k];
            assert!(s.same_config(&vs.service), "{k}");
            assert_eq!(dests, &vs.destinations, "{k}");
        }
        assert_eq!(self.exec.addresses(DUMMY_INTERFACE), plan.addresses);
        for set in &plan.ipsets {
            assert_eq!(
                self.exec.set_entries(&set.name),
                set.entries,
                "{}",
                set.name
            );
        }
    }
}

/// The live (weight > 0) destinations, by virtual server.
fn working(state: &Actual) -> BTreeSet<(ServiceKey, SocketAddr)> {
    state
        .iter()
        .flat_map(|(k, (_, ds))| {
            ds.iter()
                .filter(|d| d.weight > 0)
                .map(move |d| (*k, d.socket_addr()))
        })
        .collect()
}

fn planned(p: &Plan) -> BTreeSet<(ServiceKey, SocketAddr)> {
    p.services
        .iter()
        .flat_map(|(k, vs)| vs.destinations.iter().map(move |d| (*k, d.socket_addr())))
        .collect()
}

/// What a failed sync from `old` towards `new` must not have broken:
/// - every destination in both plans still serves;
/// - a virtual server in both plans still exists, and if it had destinations before
///   and is to have some after, it still has at least one live destination (nothing
///   was taken away before its replacement was in).
fn assert_nothing_working_lost(state: &Actual, old: &Plan, new: &Plan) {
    let live = working(state);
    for keep in planned(old).intersection(&planned(new)) {
        assert!(live.contains(keep), "lost {keep:?}; kernel: {state:?}");
    }
    for (k, vs) in &new.services {
        let Some(before) = old.services.get(k) else {
            continue;
        };
        let (_, dests) = state
            .get(k)
            .unwrap_or_else(|| panic!("virtual server {k} was deleted"));
        if !before.destinations.is_empty() && !vs.destinations.is_empty() {
            assert!(
                dests.iter().any(|d| d.weight > 0),
                "{k} lost every destination: {dests:?}"
            );
        }
    }
}

/// EXAMPLE with every web endpoint replaced (its old destinations are all to go).
fn all_web_endpoints_new() -> ServiceMap {
    map_of(
        &EXAMPLE
            .replace("10.244.1.5", "10.244.1.8")
            .replace("10.244.2.6", "10.244.3.7"),
    )
}

fn plan_of(map: &ServiceMap) -> Plan {
    plan(map, &node(), &cfg(), IpFamily::V4)
}

/// Recovery: the next sync, with nothing in its change set, rereads the kernel (it is
/// full, when the last sync failed), succeeds and reaches exactly the plan; the failure
/// counters stay.
async fn assert_recovers(rig: &mut Rig, map: &ServiceMap, failures: u64) {
    rig.ipvs.heal();
    let stats = rig
        .p
        .sync(map, &ChangeSet::default(), &node())
        .await
        .unwrap();
    assert_eq!(
        stats.full,
        failures > 0,
        "a sync after a failure reads everything again"
    );
    rig.assert_converged();
    let m = rig.p.metrics();
    assert_eq!(m.sync_failures, failures);
    assert_eq!(m.last_error, None);
    // And it stays put: one more sync writes nothing.
    rig.ipvs.clear_ops();
    let stats = rig
        .p
        .sync(map, &ChangeSet::default(), &node())
        .await
        .unwrap();
    assert!(!stats.full);
    assert_eq!(rig.ipvs.ops(), vec![]);
}

#[tokio::test]
async fn a_netlink_error_at_any_point_of_a_sync_loses_no_working_destination() {
    let (before, after) = (map_of(EXAMPLE), all_web_endpoints_new());
    let (old, new) = (plan_of(&before), plan_of(&after));
    let changes = ChangeSet::between(&before, &after);
    // How many IPVS writes the change takes when nothing fails.
    let clean = Rig::synced(&before, &node()).await;
    let writes = {
        let mut clean = clean;
        let w0 = clean.ipvs.writes();
        clean.p.sync(&after, &changes, &node()).await.unwrap();
        clean.ipvs.writes() - w0
    };
    // Cluster IP: two adds, two deletes; load balancer and node port (local
    // endpoints only): one of each.
    assert_eq!(writes, 8);
    for fault in [Fault::Refuse, Fault::LostAck] {
        for n in 0..writes {
            let mut rig = Rig::synced(&before, &node()).await;
            rig.ipvs.fail_nth(n, fault, "EIO");
            let err = rig.p.sync(&after, &changes, &node()).await.unwrap_err();
            assert_eq!(err.to_string(), "ipvs sync failed");
            assert_nothing_working_lost(&rig.ipvs.state(), &old, &new);
            let m = rig.p.metrics().clone();
            assert_eq!(
                (m.sync_failures, m.ipvs_failures),
                (1, 1),
                "{fault:?} at {n}"
            );
            assert!(
                m.last_error.as_deref().is_some_and(|e| e.contains("EIO")),
                "{m:?}"
            );
            assert_recovers(&mut rig, &after, 1).await;
        }
    }
}

#[tokio::test]
async fn a_virtual_server_whose_new_destinations_are_refused_keeps_its_old_ones() {
    let (before, after) = (map_of(EXAMPLE), all_web_endpoints_new());
    let old = plan_of(&before);
    let mut rig = Rig::synced(&before, &node()).await;
    let cip = old
        .services
        .values()
        .find(|v| v.kind == crate::plan::VsKind::ClusterIp && v.service.port == 80)
        .unwrap()
        .service
        .key();
    let old_dests = rig.ipvs.state()[&cip].1.clone();
    assert_eq!(old_dests.len(), 2);
    // The kernel refuses every write about the web cluster IP (say its scheduler
    // module is gone): its adds fail, so its deletes are held back.
    rig.ipvs.refuse_service(cip);
    assert!(
        rig.p
            .sync(&after, &ChangeSet::between(&before, &after), &node())
            .await
            .is_err()
    );
    assert_eq!(rig.ipvs.state()[&cip].1, old_dests, "old destinations kept");
    let m = rig.p.metrics();
    assert_eq!(m.ipvs_failures, 2, "two adds refused");
    assert_eq!(m.ipvs_deferred, 2, "two deletes held back");
    // Every other virtual server got its new destinations all the same.
    let new = plan_of(&after);
    for (k, vs) in new.services.iter().filter(|(k, _)| **k != cip) {
        assert_eq!(rig.ipvs.state()[k].1, vs.destinations, "{k}");
    }
    // Still refused: the next sync fails the same way and still keeps them.
    assert!(
        rig.p
            .sync(&after, &ChangeSet::default(), &node())
            .await
            .is_err()
    );
    assert_eq!(rig.ipvs.state()[&cip].1, old_dests);
    assert_recovers(&mut rig, &after, 2).await;
}

#[tokio::test]
async fn a_socket_that_dies_midway_and_a_failed_reread_are_both_recovered_from() {
    let (before, after) = (map_of(EXAMPLE), all_web_endpoints_new());
    let (old, new) = (plan_of(&before), plan_of(&after));
    let mut rig = Rig::synced(&before, &node()).await;
    rig.ipvs.fail_from(1);
    assert!(
        rig.p
            .sync(&after, &ChangeSet::between(&before, &after), &node())
            .await
            .is_err()
    );
    assert_nothing_working_lost(&rig.ipvs.state(), &old, &new);
    // The socket is still dead, and now the reread fails too: nothing changes.
    rig.ipvs.fail_reads(true);
    let state = rig.ipvs.state();
    assert!(
        rig.p
            .sync(&after, &ChangeSet::default(), &node())
            .await
            .is_err()
    );
    assert_eq!(rig.ipvs.state(), state);
    assert!(rig.p.metrics().ipvs_failures >= 1);
    assert_recovers(&mut rig, &after, 2).await;
}

#[tokio::test]
async fn a_failed_ipset_restore_stops_the_sync_before_ipvs_and_is_retried() {
    let before = map_of(EXAMPLE);
    let old = plan_of(&before);
    // A new service: a new cluster IP entry, a new address, a new virtual server.
    let grown = map_of(&format!(
        "{EXAMPLE}---\napiVersion: v1\nkind: Service\nmetadata: {{ name: new, namespace: default }}\nspec:\n  clusterIP: 10.96.0.77\n  ports: [{{ name: p, port: 81, protocol: TCP }}]\n"
    ));
    let mut rig = Rig::synced(&before, &node()).await;
    let kernel = rig.ipvs.state();
    rig.exec.fail_next(FailPoint::IpsetRestore);
    assert!(
        rig.p
            .sync(&grown, &ChangeSet::between(&before, &grown), &node())
            .await
            .is_err()
    );
    // Nothing else was touched: IPVS, the link and the sets are as before.
    assert_eq!(rig.ipvs.state(), kernel);
    assert_eq!(rig.exec.addresses(DUMMY_INTERFACE), old.addresses);
    for set in &old.ipsets {
        assert_eq!(rig.exec.set_entries(&set.name), set.entries);
    }
    assert_eq!(rig.p.metrics().ipset_restore_failures, 1);
    assert_recovers(&mut rig, &grown, 1).await;
    assert!(
        rig.exec
            .set_entries("KUBE-CLUSTER-IP")
            .contains("10.96.0.77,tcp:81")
    );
}

#[tokio::test]
async fn a_failed_iptables_restore_or_address_bind_is_counted_and_retried() {
    let before = map_of(EXAMPLE);
    let grown = map_of(&format!(
        "{EXAMPLE}---\napiVersion: v1\nkind: Service\nmetadata: {{ name: new, namespace: default }}\nspec:\n  clusterIP: 10.96.0.77\n  ports: [{{ name: p, port: 81, protocol: TCP }}]\n"
    ));
    let (old, new) = (plan_of(&before), plan_of(&grown));

    // The companion iptables-restore fails (upstream counts this in
    // sync_proxy_rules_iptables_restore_failures_total).
    let mut rig = Rig::synced(&before, &node()).await;
    rig.exec.fail_next(FailPoint::RestoreIptables);
    assert!(
        rig.p
            .sync(&grown, &ChangeSet::full(), &node())
            .await
            .is_err()
    );
    assert_nothing_working_lost(&rig.ipvs.state(), &old, &new);
    assert_eq!(rig.p.metrics().iptables_restore_failures, 1);
    rig.exec.clear();
    assert_recovers(&mut rig, &grown, 1).await;
    assert!(
        rig.exec
            .calls()
            .iter()
            .any(|c| matches!(c, crate::exec::Call::RestoreIptables(..))),
        "the rules were restored again"
    );

    // Binding the new cluster IP to kube-ipvs0 fails.
    let mut rig = Rig::synced(&before, &node()).await;
    rig.exec.fail_next(FailPoint::AddAddress);
    assert!(
        rig.p
            .sync(&grown, &ChangeSet::between(&before, &grown), &node())
            .await
            .is_err()
    );
    assert_nothing_working_lost(&rig.ipvs.state(), &old, &new);
    assert_eq!(rig.p.metrics().address_failures, 1);
    assert_recovers(&mut rig, &grown, 1).await;
}

fn map_for(snap: &Snapshot) -> ServiceMap {
    ServiceMap::build(snap, &BuildOptions::for_node("node-a"))
}

#[derive(Debug, Clone, Copy)]
enum Injected {
    /// One write fails at the point, as the fault says.
    Once(Fault),
    /// Every write from the point on fails.
    DeadSocket,
}

fn arb_injected() -> impl Strategy<Value = Injected> {
    prop_oneof![
        Just(Injected::Once(Fault::Refuse)),
        Just(Injected::Once(Fault::LostAck)),
        Just(Injected::DeadSocket),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// For random clusters before and after, and a random failure point: the kernel
    /// after the failed sync still has every destination both plans share (and no
    /// virtual server in both lost all its destinations), and one clean sync then
    /// reaches the new plan exactly.
    #[test]
    fn a_failure_anywhere_keeps_old_and_new_in_common_and_one_clean_sync_converges(
        before in arb_snapshot(),
        after in arb_snapshot(),
        at in any::<prop::sample::Index>(),
        injected in arb_injected(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (before, after) = (map_for(&before), map_for(&after));
            let (old, new) = (plan_of(&before), plan_of(&after));
            let changes = ChangeSet::between(&before, &after);
            // The failure point: one of the writes the change takes without faults.
            let writes = {
                let mut clean = Rig::synced(&before, &node()).await;
                let w0 = clean.ipvs.writes();
                clean.p.sync(&after, &changes, &node()).await.unwrap();
                clean.ipvs.writes() - w0
            };
            let at = if writes == 0 { 0 } else { at.index(writes) };
            let mut rig = Rig::synced(&before, &node()).await;
            match injected {
                Injected::Once(f) => rig.ipvs.fail_nth(at, f, "EIO"),
                Injected::DeadSocket => rig.ipvs.fail_from(at),
            }
            let r = rig.p.sync(&after, &changes, &node()).await;
            let m = rig.p.metrics().clone();
            // It fails exactly when there was a write to fail.
            prop_assert_eq!(r.is_err(), writes > 0);
            if r.is_err() {
                prop_assert_eq!(m.sync_failures, 1);
                prop_assert!(m.ipvs_failures >= 1);
                prop_assert!(m.last_error.is_some());
            } else {
                prop_assert_eq!(m.sync_failures, 0);
            }
            assert_nothing_working_lost(&rig.ipvs.state(), &old, &new);
            assert_recovers(&mut rig, &after, m.sync_failures).await;
            Ok(())
        })?;
    }
}
