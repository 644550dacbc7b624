//! Planner speed: full plans of 1 000 and 10 000 services × 10 endpoints, a partial plan
//! after one endpoint change at 10 000 services, and parsing a full plan into the model.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, criterion_group, criterion_main};
use kproxy_core::model::IpFamily;
use kproxy_core::{ChangeSet, Object};
use kproxy_iptables::plan::{PlanConfig, plan};
use kproxy_iptables::ruleset::Ruleset;
use kproxy_iptables::synth;

fn bench(c: &mut Criterion) {
    let cfg = PlanConfig::defaults(IpFamily::V4);
    let node = synth::node();
    for n in [1_000, 10_000] {
        let map = synth::map(&synth::snapshot(n, 10));
        c.bench_function(&format!("full plan {n} services x 10 endpoints"), |b| {
            b.iter(|| plan(&map, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None));
        });
    }
    let snap = synth::snapshot(10_000, 10);
    let before = synth::map(&snap);
    let full = plan(&before, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None);
    let text = full.text.clone();
    let state = full.into_state(None);
    let mut after_snap = snap.clone();
    after_snap.apply(Object::EndpointSlice(synth::slice(42, 10, 1)));
    let after = synth::map(&after_snap);
    let changes = ChangeSet::between(&before, &after);
    c.bench_function("partial plan, one endpoint of 10000 services", |b| {
        b.iter(|| plan(&after, &changes, &node, &cfg, IpFamily::V4, Some(&state)));
    });
    c.bench_function("changeset between 10000-service maps", |b| {
        b.iter(|| ChangeSet::between(&before, &after))
    });
    let mut g = c.benchmark_group("model");
    g.sample_size(10);
    g.bench_function("parse full plan of 10000 services", |b| {
        b.iter(|| Ruleset::parse(&text))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
