//! `kproxy trace` end to end: the built binary on the bundled example cluster, for node
//! node-a (whose InternalIP is 10.0.1.10).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

/// Runs `kproxy trace --from cluster.yaml [--from extra] --hostname-override node-a ARGS`.
fn trace(extra: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kproxy"));
    cmd.args(["trace", "--from", &example("cluster.yaml")]);
    if let Some(p) = extra {
        cmd.arg("--from").arg(p);
    }
    cmd.args(["--hostname-override", "node-a"]).args(args);
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// The outcome lines (`  50.000%  ACCEPT DNAT to ...`), trimmed.
fn outcomes(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.trim().to_owned())
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("trace-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_cluster_ip_packet_reaches_each_endpoint_with_its_probability() {
    let out = trace(
        None,
        &[
            "--proto",
            "udp",
            "--src",
            "10.244.1.7",
            "--dst",
            "10.96.0.10",
            "--dport",
            "53",
            "--in-iface",
            "veth1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("packet: udp 10.244.1.7 -> 10.96.0.10:53 (in veth1)\n"),
        "{text}"
    );
    assert_eq!(
        outcomes(&text),
        [
            "50.000%  ACCEPT DNAT to 10.244.1.3:53",
            "50.000%  ACCEPT DNAT to 10.244.2.4:53"
        ],
        "{text}"
    );
    assert!(
        text.contains(
            "path: nat/PREROUTING -> nat/KUBE-SERVICES -> nat/KUBE-SVC-TCOU7JCQXEZGVUNU -> nat/KUBE-SEP-EJJ3L23ZA35VLW6X"
        ),
        "{text}"
    );
    assert!(
        text.contains("decided by nat/KUBE-SEP-EJJ3L23ZA35VLW6X: "),
        "{text}"
    );
}

#[test]
fn an_external_ip_packet_is_masqueraded() {
    let out = trace(
        None,
        &[
            "--src",
            "198.51.100.9",
            "--dst",
            "192.0.2.50",
            "--dport",
            "80",
            "--in-iface",
            "eth0",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        outcomes(&stdout(&out)),
        ["100.000%  ACCEPT DNAT to 10.244.1.11:8080, masqueraded"]
    );
}

#[test]
fn a_packet_to_a_service_without_endpoints_is_rejected() {
    let dir = scratch("no-endpoints");
    let extra = dir.join("lonely.yaml");
    std::fs::write(
        &extra,
        "apiVersion: v1\nkind: Service\nmetadata: { name: lonely, namespace: default }\n\
         spec: { clusterIP: 10.96.200.1, ports: [{ name: http, port: 80, protocol: TCP }] }\n",
    )
    .unwrap();
    let out = trace(
        Some(&extra),
        &[
            "--src",
            "10.244.1.7",
            "--dst",
            "10.96.200.1",
            "--dport",
            "80",
            "--in-iface",
            "veth1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(outcomes(&text), ["100.000%  REJECT"], "{text}");
    assert!(
        text.contains("\"default/lonely:http has no endpoints\"") && text.contains("-j REJECT"),
        "{text}"
    );
}

#[test]
fn an_external_traffic_policy_local_node_port_without_local_endpoints_is_dropped() {
    // default/ingress:http (nodePort 30081, eTP Local) has its only endpoint on node-b.
    let out = trace(
        None,
        &[
            "--src",
            "198.51.100.9",
            "--dst",
            "10.0.1.10",
            "--dport",
            "30081",
            "--in-iface",
            "eth0",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(outcomes(&text), ["100.000%  DROP"], "{text}");
    assert!(
        text.contains(
            "decided by filter/KUBE-EXTERNAL-SERVICES: -m comment --comment \"default/ingress:http has no local endpoints\""
        ),
        "{text}"
    );
    // The same port from the node itself still reaches the endpoint (routed as cluster
    // traffic, masqueraded).
    let out = trace(
        None,
        &[
            "--src",
            "10.0.1.10",
            "--src-local",
            "--dst",
            "10.0.1.10",
            "--dport",
            "30081",
        ],
    );
    assert_eq!(
        outcomes(&stdout(&out)),
        ["100.000%  ACCEPT DNAT to 10.244.2.31:80, masqueraded"],
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_input_exits_2_and_still_traces_the_good_objects() {
    let dir = scratch("bad");
    std::fs::write(dir.join("broken.yaml"), "kind: Service\nspec: [\n").unwrap();
    let out = trace(
        Some(&dir),
        &[
            "--src",
            "10.244.1.7",
            "--dst",
            "10.96.0.1",
            "--dport",
            "443",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("kproxy: "), "{}", stderr(&out));
    assert_eq!(
        outcomes(&stdout(&out)),
        ["100.000%  ACCEPT DNAT to 10.0.1.10:6443"]
    );
    // A malformed address is a usage error.
    let out = trace(
        None,
        &["--src", "nope", "--dst", "10.96.0.1", "--dport", "443"],
    );
    assert_eq!(out.status.code(), Some(2));
}
