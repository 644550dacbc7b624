//! nfacct in a network namespace (issue 4): a full sync creates upstream's two
//! accounting objects over nfnetlink (no `nfacct` binary), the rules reference them and
//! the kernel accepts those rules, and connections to a node port on 127.0.0.1 count
//! in `localhost_nps_accepted_pkts`, as read back through the executor's GET.
//!
//! Run as root; without root or `ip netns` each test prints why and returns. Everything
//! happens inside namespaces the test creates.

#[allow(dead_code)]
#[path = "kernel/netns.rs"]
mod netns;

use std::process::Command;
use std::time::Duration;

use kproxy_core::model::IpFamily;
use kproxy_core::{
    BuildOptions, ChangeSet, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, Snapshot,
};
use kproxy_iptables::exec::{Backend, Executor, RealExecutor};
use kproxy_iptables::nfacct::{
    CT_STATE_INVALID_DROPPED, LOCALHOST_NODEPORTS_ACCEPTED, NfacctAttr, NfacctMessage,
};
use kproxy_iptables::proxier::IptablesProxier;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netns::{BACKENDS_V4, Topology, skip_reason, tcp_ask};

const NODE: &str = "kp-node";

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: t}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: t, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: ["10.240.2.10"], nodeName: other}]
ports: [{name: http, port: 8080, protocol: TCP}]
"#;

fn backend() -> Backend {
    match std::env::var("KPROXY_IPTABLES_BACKEND").as_deref() {
        Ok("legacy") => Backend::Legacy,
        Ok("nft") => Backend::Nft,
        _ => Backend::Default,
    }
}

fn save_tool() -> &'static str {
    match backend() {
        Backend::Legacy => "iptables-legacy-save",
        Backend::Nft => "iptables-nft-save",
        Backend::Default => "iptables-save",
    }
}

/// The kernel's raw answer to a GET of `name`, from a socket opened in `ns`.
fn raw_get(ns: &str, name: &'static str) -> Vec<u8> {
    Topology::in_ns(ns, move || {
        let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER).unwrap();
        s.bind_auto().unwrap();
        s.connect(&netlink_sys::SocketAddr::new(0, 0)).unwrap();
        let mut h = NetlinkHeader::default();
        h.flags = NLM_F_REQUEST | NLM_F_ACK;
        h.sequence_number = 2;
        let mut m = NetlinkMessage::new(
            h,
            NetlinkPayload::InnerMessage(NfacctMessage::get_counter(name)),
        );
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        s.send(&buf, 0).unwrap();
        // The answer is queued before send returns; the ACK follows in its own read.
        s.recv_from_full().unwrap().0
    })
    .unwrap()
}

#[test]
fn full_sync_creates_the_counters_and_localhost_node_port_packets_count() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping kernel test: {reason}");
        return;
    }
    let topo = Topology::new().expect("namespace setup");
    let exec = RealExecutor::new(backend())
        .with_prefix(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            topo.node.clone(),
        ])
        .with_timeout(Duration::from_secs(20));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Nothing there before the first sync.
    assert!(
        rt.block_on(exec.read_nfacct(CT_STATE_INVALID_DROPPED))
            .is_err()
    );

    let mut proxier = IptablesProxier::new(
        exec,
        &KubeProxyConfiguration::default(),
        &[IpFamily::V4, IpFamily::V6],
    )
    .unwrap();
    let (snap, _) = Snapshot::from_documents(SERVICES).unwrap();
    let map = ServiceMap::build(&snap, &BuildOptions::for_node(NODE));
    let node = NodeFacts {
        name: NODE.into(),
        node_ips: vec!["10.240.1.1".parse().unwrap()],
        local_addresses: Topology::node_addresses(),
        pod_cidrs: vec![],
    };
    let stats = rt
        .block_on(proxier.sync(&map, &ChangeSet::full(), &node))
        .expect("iptables-restore accepts the -m nfacct rules");
    assert!(stats.full);
    for name in [CT_STATE_INVALID_DROPPED, LOCALHOST_NODEPORTS_ACCEPTED] {
        let c = rt
            .block_on(proxier.executor().read_nfacct(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((c.name.as_str(), c.packets), (name, 0));
    }
    // Ensuring again (the next full sync) keeps them and their counts.
    rt.block_on(proxier.executor().ensure_nfacct(CT_STATE_INVALID_DROPPED))
        .unwrap();

    let saved = Command::new("ip")
        .args(["netns", "exec", &topo.node, save_tool()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&saved.stdout);
    let with = |name: &str| {
        text.lines()
            .filter(|l| l.contains("--nfacct-name") && l.contains(name))
            .count()
    };
    // The INVALID drop of both families' KUBE-FORWARD lives in the IPv4 save once;
    // the localhost node port copy once per node port.
    assert_eq!(with(CT_STATE_INVALID_DROPPED), 1, "{text}");
    assert_eq!(with(LOCALHOST_NODEPORTS_ACCEPTED), 1, "{text}");

    // A referenced counter cannot be deleted.
    let busy = rt.block_on(
        proxier
            .executor()
            .delete_nfacct(LOCALHOST_NODEPORTS_ACCEPTED),
    );
    assert!(busy.is_err(), "deleted while referenced");

    // Node ports answer on 127.0.0.1 once route_localnet is set (in the node namespace
    // only, as kube-proxy sets it on a node).
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.node,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.route_localnet=1",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let replies: Vec<String> = Topology::in_ns(&topo.node, || {
        (0..3)
            .map(|_| {
                tcp_ask("127.0.0.1:30080".parse().unwrap(), Duration::from_secs(2))
                    .unwrap_or_else(|e| format!("error {e}"))
            })
            .collect()
    })
    .unwrap();
    for r in &replies {
        assert!(r.starts_with(BACKENDS_V4[0]), "{replies:?}");
    }
    // Only the first packet of a connection goes through the nat table.
    let c = rt
        .block_on(proxier.executor().read_nfacct(LOCALHOST_NODEPORTS_ACCEPTED))
        .unwrap();
    assert_eq!(c.packets, 3, "{c:?}");
    assert!(c.bytes >= 3 * 40, "{c:?}");
    let exported = rt.block_on(proxier.nfacct_packets());
    assert_eq!(exported.get(LOCALHOST_NODEPORTS_ACCEPTED), Some(&3));
    assert_eq!(exported.get(CT_STATE_INVALID_DROPPED), Some(&0));

    // The raw kernel answer (the golden bytes in src/nfacct/tests.rs come from here).
    let raw = raw_get(&topo.node, LOCALHOST_NODEPORTS_ACCEPTED);
    let hex: Vec<String> = raw.iter().map(|b| format!("{b:02x}")).collect();
    eprintln!("GET {LOCALHOST_NODEPORTS_ACCEPTED} reply: {}", hex.join(""));
    let m = NetlinkMessage::<NfacctMessage>::deserialize(&raw).unwrap();
    let NetlinkPayload::InnerMessage(msg) = m.payload else {
        panic!("{m:?}");
    };
    assert!(msg.attrs.contains(&NfacctAttr::Packets(3)), "{msg:?}");
    assert!(
        msg.attrs.contains(&NfacctAttr::Use(2)),
        "one rule and the object: {msg:?}"
    );
}
