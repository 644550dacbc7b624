//! Small clusters for the backend targets (`iptables_plan`, `ipvs_plan`): objects from
//! [`map_build`](crate::map_build)'s generator, built into a [`ServiceMap`] twice: once
//! with the generator's plain names, once with every namespace, service name, port name
//! and node name replaced (injectively, keeping their order) by a hostile string:
//! `-j`, `#`, backslashes, NUL, unicode, a 253-byte name; and, behind a switch while the
//! iptables finding is open (README.md), spaces, quotes, newlines, `-j ACCEPT` and
//! restore-file keywords. A backend must plan the same rules for both, up to comments
//! and hashed chain names.

use std::net::IpAddr;

use arbitrary::{Arbitrary, Unstructured};
use kproxy_core::model::ObjectRef;
use kproxy_core::snapshot::Object;
use kproxy_core::{BuildOptions, KubeProxyConfiguration, NodeFacts, ServiceMap, Snapshot};

use crate::map_build::{NODES, ObjectInput, pick};

/// Most objects one input builds (keeps a planner run, two families, a few ms).
const MAX_OBJECTS: usize = 10;

/// The generator's names (see `map_build`), each replaced through [`hostile`].
const PLAIN: [&[&str]; 4] = [
    &["default", "kube-system"],
    &["svc-0", "svc-1", "svc-2", "svc-3"],
    &["", "http", "dns"],
    &NODES,
];

/// Names a backend must quote or hash wherever they reach rule text, and which the
/// iptables planner survives today: no whitespace, no quotes.
fn hostile() -> Vec<String> {
    let mut v: Vec<String> = [
        "default",
        "-j",
        "#hash",
        "--dport",
        "back\\slash\\",
        "ünïcødé☃名前",
        "a,b:c/d",
        "%s%n{}",
        "\u{0}nul",
        "http",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("n".repeat(253));
    v
}

/// Names with whitespace, quotes or line breaks, which no API server would accept: they
/// once ended the iptables planner's comments, arguments or lines early (README.md,
/// Findings); the planner now keeps only name characters in comments. Generated only
/// when [`ClusterInput::unescaped`] is [`UNESCAPED`].
fn unescaped() -> Vec<String> {
    let mut v: Vec<String> = [
        "with space",
        "-j ACCEPT",
        "# not a comment",
        "'single' quote",
        "tab\there\r",
        "\u{2028}sep\u{85}\u{a0}",
        "q\"uote",
        "x\" -j ACCEPT -m comment --comment \"y",
        "new\nline",
        "x\n-A KUBE-SERVICES -j ACCEPT\n",
        "\nCOMMIT\n*filter\n",
        "back\\\" slash quote",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push(format!("{}\"", "q".repeat(252)));
    v
}

/// The value of [`ClusterInput::unescaped`] that adds [`unescaped`] names to the pool
/// (`""`, two quote bytes): a rare switch, which libFuzzer's comparison tracing finds.
const UNESCAPED: u16 = 0x2222;

#[derive(Debug, Arbitrary)]
struct ClusterInput {
    node: u8,
    prefer_same_node: bool,
    /// Per kind of name (namespace, service, port, node): where in the hostile pool its
    /// replacements start.
    names: [u8; 4],
    config: u8,
    /// [`UNESCAPED`]: names with whitespace, quotes and line breaks join the pool.
    unescaped: u16,
    objects: Vec<ObjectInput>,
}

/// One generated cluster: the same objects with plain and with hostile names.
pub(crate) struct Cluster {
    /// The map with the generator's names.
    pub plain: ServiceMap,
    /// The same map with hostile names.
    pub hostile: ServiceMap,
    /// The node (plain name; node names only matter to endpoint selection).
    pub node: NodeFacts,
    /// A config variant: masqueradeAll, clusterCIDR, nodePortAddresses.
    pub config: KubeProxyConfiguration,
    /// Which variant, for messages.
    pub variant: u8,
}

/// Replaces the generator's names by hostile ones, per kind of name, injectively and
/// in the same order: core breaks ties by name (which copy of an address found in two
/// slices it keeps, say), and the hostile map must select what the plain one does.
struct Renamer {
    /// Per kind, the plain names sorted and their replacements, sorted likewise.
    kinds: Vec<Vec<(&'static str, String)>>,
}

impl Renamer {
    fn new(mut pool: Vec<String>, offsets: [u8; 4]) -> Self {
        pool.sort();
        pool.dedup();
        let kinds = PLAIN
            .iter()
            .zip(offsets)
            .map(|(plain, offset)| {
                let mut plain = plain.to_vec();
                plain.sort_unstable();
                // Distinct picks: 7 is prime to the pool sizes and plain.len() <= pool.len().
                let mut picks: Vec<usize> = (0..plain.len())
                    .map(|i| (usize::from(offset) + 7 * i) % pool.len())
                    .collect();
                picks.sort_unstable();
                plain
                    .into_iter()
                    .zip(picks)
                    .map(|(p, i)| (p, pool[i].clone()))
                    .collect()
            })
            .collect();
        Renamer { kinds }
    }

    /// The hostile replacement of `name`, a name of kind `kind` (index into [`PLAIN`]).
    /// Names not from the generator stay.
    fn name(&self, kind: usize, name: &str) -> String {
        self.kinds[kind]
            .iter()
            .find(|(p, _)| *p == name)
            .map_or_else(|| name.to_owned(), |(_, h)| h.clone())
    }

    fn service(&self, r: &ObjectRef) -> ObjectRef {
        ObjectRef::new(self.name(0, &r.namespace), self.name(1, &r.name))
    }

    fn object(&self, o: &Object) -> Object {
        let mut o = o.clone();
        match &mut o {
            Object::Service(s) => {
                s.id = self.service(&s.id);
                for p in &mut s.ports {
                    p.name = self.name(2, &p.name);
                }
            }
            Object::EndpointSlice(s) => {
                // The slice keeps its name: core merges an address found in two slices
                // of a service in slice-name order, which renaming must not change.
                s.id = ObjectRef::new(self.name(0, &s.id.namespace), s.id.name.clone());
                s.service = self.service(&s.service);
                for p in &mut s.ports {
                    p.name = self.name(2, &p.name);
                }
                for e in &mut s.endpoints {
                    e.node_name = e.node_name.as_deref().map(|n| self.name(3, n));
                    for n in &mut e.node_hints {
                        *n = self.name(3, n);
                    }
                }
            }
            Object::Node(n) => n.name = self.name(3, &n.name),
        }
        o
    }
}

/// The node the maps are built for: addresses outside the pod CIDRs of the configs.
fn node_facts(name: &str) -> NodeFacts {
    let ips: [IpAddr; 4] = [
        "172.18.0.2".parse().expect("literal"),
        "fd01:18::2".parse().expect("literal"),
        "127.0.0.1".parse().expect("literal"),
        "::1".parse().expect("literal"),
    ];
    NodeFacts {
        name: name.to_owned(),
        node_ips: ips[..2].to_vec(),
        local_addresses: ips.to_vec(),
        pod_cidrs: Vec::new(),
    }
}

/// Config variant `v`: bit 0 `masqueradeAll`, bit 1 `clusterCIDR` (both families),
/// bits 2–3 `nodePortAddresses` (none, the node's networks, `primary`, loopback only).
fn config(v: u8) -> KubeProxyConfiguration {
    let mut cfg = KubeProxyConfiguration::default();
    cfg.iptables.masquerade_all = v & 1 != 0;
    if v & 2 != 0 {
        cfg.cluster_cidr = "10.0.0.0/8,fd00::/16".into();
    }
    cfg.node_port_addresses = match (v >> 2) & 3 {
        0 => Vec::new(),
        1 => vec!["172.18.0.0/16".into(), "fd01::/16".into()],
        2 => vec!["primary".into()],
        _ => vec!["127.0.0.0/8".into()],
    };
    cfg
}

/// Reads one cluster from `data`; `None` if the bytes run out before the header.
pub(crate) fn cluster(data: &[u8]) -> Option<Cluster> {
    let input = ClusterInput::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    let mut pool = hostile();
    if input.unescaped == UNESCAPED {
        pool.extend(unescaped());
    }
    let renamer = Renamer::new(pool, input.names);
    let node = pick(&NODES, input.node);
    let mut plain = Snapshot::new();
    let mut hostile = Snapshot::new();
    for o in input.objects.into_iter().take(MAX_OBJECTS) {
        let o = o.build();
        hostile.apply(renamer.object(&o));
        plain.apply(o);
    }
    let opts = |name: String| BuildOptions {
        node_name: name,
        prefer_same_node: input.prefer_same_node,
    };
    let variant = input.config & 15;
    Some(Cluster {
        plain: ServiceMap::build(&plain, &opts(node.to_owned())),
        hostile: ServiceMap::build(&hostile, &opts(renamer.name(3, node))),
        node: node_facts(node),
        config: config(variant),
        variant,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::cluster;

    /// The seeds are random bytes picked for the maps they build; this checks they still
    /// decode into clusters worth planning (ports with selected endpoints, hostile names).
    #[test]
    fn seeds_decode_into_maps_with_selected_endpoints() {
        for target in ["iptables_plan", "ipvs_plan"] {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(target);
            let (mut ports, mut selected, mut renamed) = (0, 0, 0);
            for entry in fs::read_dir(dir).expect("corpus folder") {
                let data = fs::read(entry.expect("entry").path()).expect("seed");
                if let Some(c) = cluster(&data) {
                    ports += c.hostile.len();
                    selected += c
                        .hostile
                        .iter()
                        .filter(|p| !p.selection.cluster.is_empty())
                        .count();
                    renamed += c
                        .hostile
                        .iter()
                        .filter(|p| !p.name.service.name.starts_with("svc-"))
                        .count();
                }
            }
            eprintln!(
                "{target} seeds: {ports} ports, {selected} with cluster endpoints, {renamed} renamed"
            );
            assert!(ports >= 6, "{target}: the seeds build only {ports} ports");
            assert!(
                selected >= 3,
                "{target}: {selected} ports select an endpoint"
            );
            assert!(renamed >= 3, "{target}: {renamed} ports have hostile names");
        }
    }
}
