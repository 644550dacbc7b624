//! ServiceMap build and update at scale: 10,000 services × 10 endpoints (issue targets:
//! full build < 50 ms, one-service update < 1 ms, map memory < 100 MiB).
//!
//! Run: `cargo bench -p kproxy-core --bench service_map`. The memory figure is printed
//! once, measured as resident-set growth while one map is built. The build timing leaves
//! out freeing the map (criterion's `iter_with_large_drop`); the drop is timed on its own.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kproxy_core::model::{
    Endpoint, EndpointConditions, EndpointSlice, IpFamily, ObjectRef, Protocol, Service,
    ServicePortSpec, ServiceType, SlicePort, TrafficPolicy,
};
use kproxy_core::{BuildOptions, ChangeTracker, Event, Object, ServiceMap, Snapshot};

const SERVICES: u32 = 10_000;
const ENDPOINTS: u32 = 10;
const NODES: u32 = 100;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn service(i: u32) -> Service {
    Service {
        id: ObjectRef::new(format!("ns-{}", i % 50), format!("svc-{i}")),
        service_type: if i.is_multiple_of(10) {
            ServiceType::NodePort
        } else {
            ServiceType::ClusterIP
        },
        cluster_ips: vec![ip(0x0a60_0000 + i)],
        ports: vec![ServicePortSpec {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: i.is_multiple_of(10).then_some(30000 + (i / 10) as u16),
        }],
        external_ips: Vec::new(),
        load_balancer_ingress: Vec::new(),
        load_balancer_source_ranges: Vec::new(),
        external_traffic_policy: TrafficPolicy::Cluster,
        internal_traffic_policy: TrafficPolicy::Cluster,
        session_affinity: None,
        health_check_node_port: None,
    }
}

fn slice(i: u32, generation: u32) -> EndpointSlice {
    let svc = service(i).id;
    EndpointSlice {
        id: ObjectRef::new(svc.namespace.clone(), format!("{}-abcde", svc.name)),
        service: svc,
        family: IpFamily::V4,
        ports: vec![SlicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints: (0..ENDPOINTS)
            .map(|e| Endpoint {
                address: ip(0x0a00_0000 + i * ENDPOINTS + e + generation),
                conditions: EndpointConditions::default(),
                node_name: Some(format!("node-{}", (i + e) % NODES)),
                zone: Some(format!("zone-{}", (i + e) % 3)),
                zone_hints: Vec::new(),
                node_hints: Vec::new(),
            })
            .collect(),
        last_change_trigger_time: None,
    }
}

fn cluster() -> Snapshot {
    let mut s = Snapshot::new();
    for i in 0..SERVICES {
        s.apply(Object::Service(service(i)));
        s.apply(Object::EndpointSlice(slice(i, 0)));
    }
    s
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn bench(c: &mut Criterion) {
    let snap = cluster();
    let opts = BuildOptions::for_node("node-0");

    if let (Some(before), map, Some(after)) =
        (rss_bytes(), ServiceMap::build(&snap, &opts), rss_bytes())
    {
        println!(
            "service map memory: {:.1} MiB for {} ports, {} endpoints",
            (after.saturating_sub(before)) as f64 / (1024.0 * 1024.0),
            map.len(),
            map.endpoint_count(IpFamily::V4)
        );
    }

    c.bench_function("full build 10k services x 10 endpoints", |b| {
        b.iter_with_large_drop(|| ServiceMap::build(black_box(&snap), &opts))
    });

    c.bench_function("drop of that map", |b| {
        b.iter_batched(
            || ServiceMap::build(&snap, &opts),
            drop,
            BatchSize::PerIteration,
        )
    });

    let mut tracker = ChangeTracker::new(opts.clone());
    tracker.apply(Event::Reset(
        snap.services()
            .cloned()
            .map(Object::Service)
            .chain(snap.slices().cloned().map(Object::EndpointSlice))
            .collect(),
    ));
    tracker.commit();
    let mut generation = 0;
    c.bench_function("one-service update at 10k services", |b| {
        b.iter_batched(
            || {
                generation = (generation + 1) % 7;
                Event::Apply(Object::EndpointSlice(slice(
                    SERVICES / 2,
                    generation * 1000,
                )))
            },
            |event| {
                tracker.apply(event);
                black_box(tracker.commit())
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
