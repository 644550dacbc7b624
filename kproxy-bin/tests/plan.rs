//! `kproxy plan` end to end: the built binary on the bundled examples and on bad input.
//!
//! The table output is compared with `tests/golden/plan-cluster-node-a.txt`; after an
//! intended change, regenerate it with `UPDATE_GOLDEN=1 cargo test -p kproxy-bin --test plan`
//! and review the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn example(name: &str) -> String {
    repo()
        .join("examples")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

fn kproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A fresh directory under cargo's per-target temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("plan-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compares `got` with a file under `tests/golden/` (rewritten with `UPDATE_GOLDEN=1`),
/// naming the first line that differs.
fn assert_golden(name: &str, got: &str) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    if got != want {
        for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
            assert_eq!(g, w, "{name}: first difference at line {}", i + 1);
        }
        assert_eq!(
            got.lines().count(),
            want.lines().count(),
            "{name}: line counts differ"
        );
    }
}

#[test]
fn table_output_of_the_example_cluster_matches_the_golden_file() {
    let out = kproxy(&[
        "plan",
        "--from",
        &example("cluster.yaml"),
        "--hostname-override",
        "node-a",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_golden("plan-cluster-node-a.txt", &stdout(&out));
}

/// The map, then the exact iptables-restore input of a full sync, per family.
#[test]
fn iptables_plan_of_the_example_cluster_matches_the_golden_file() {
    let out = kproxy(&[
        "plan",
        "--from",
        &example("cluster.yaml"),
        "--hostname-override",
        "node-a",
        "--proxy-mode",
        "iptables",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let text = stdout(&out);
    // The map part is the plain plan's, unchanged.
    let map = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/plan-cluster-node-a.txt"),
    )
    .unwrap();
    assert!(
        text.starts_with(&map),
        "the map part differs from plan-cluster-node-a.txt"
    );
    let v4 = text.find("\n== iptables IPv4 ==\n").expect("IPv4 section");
    let v6 = text.find("\n== iptables IPv6 ==\n").expect("IPv6 section");
    assert!(v4 < v6);
    // Each family's section is restore input: tables in order, each committed.
    for section in text[v4..].split("\n== ").skip(1) {
        let tables: Vec<&str> = section.lines().filter(|l| l.starts_with('*')).collect();
        assert_eq!(tables, ["*filter", "*nat"], "{section}");
        assert_eq!(section.matches("\nCOMMIT\n").count(), 2, "{section}");
    }
    assert_golden("plan-cluster-node-a-iptables.txt", &text);
}

#[test]
fn a_directory_reads_like_its_files_and_skips_other_kinds() {
    // examples/ also holds the KubeProxyConfiguration, which is not a proxied kind.
    let dir = kproxy(&[
        "plan",
        "--from",
        &repo().join("examples").to_string_lossy(),
        "--hostname-override",
        "node-a",
    ]);
    let file = kproxy(&[
        "plan",
        "--from",
        &example("cluster.yaml"),
        "--hostname-override",
        "node-a",
    ]);
    assert_eq!(dir.status.code(), Some(0), "stderr: {}", stderr(&dir));
    assert_eq!(stdout(&dir), stdout(&file));
}

#[test]
fn json_and_yaml_outputs_parse_back_to_the_same_document() {
    let base = [
        "plan",
        "--from",
        &example("cluster.yaml"),
        "--hostname-override",
        "NODE-A",
    ];
    let json = kproxy(&[&base[..], &["-o", "json"]].concat());
    let yaml = kproxy(&[&base[..], &["--output", "yaml"]].concat());
    assert_eq!(json.status.code(), Some(0));
    assert_eq!(yaml.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    let y: serde_json::Value = serde_saphyr::from_str(&stdout(&yaml)).unwrap();
    assert_eq!(j, y);
    // The override is lower-cased, as upstream's node name.
    assert_eq!(j["node"], "node-a");
    assert_eq!(j["zone"], "us-east-1a");
    let families: Vec<&str> = j["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["family"].as_str().unwrap())
        .collect();
    assert_eq!(families, ["IPv4", "IPv6"]);
    let ports = j["families"][0]["servicePorts"].as_array().unwrap();
    let names: Vec<&str> = ports.iter().map(|p| p["name"].as_str().unwrap()).collect();
    // Headless default/db and ExternalName default/legacy are not proxied.
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("default/db") || n.starts_with("default/legacy"))
    );
    assert!(names.contains(&"kube-system/kube-dns:dns"));
    let ingress = ports
        .iter()
        .find(|p| p["name"] == "default/ingress:http")
        .unwrap();
    assert_eq!(ingress["loadBalancerIPs"][0], "203.0.113.10");
    assert_eq!(ingress["healthCheckNodePort"], 32001);
    assert_eq!(ingress["traffic"]["externalUses"], "local");
    assert_eq!(ingress["traffic"]["local"], serde_json::json!([]));
    let web = ports
        .iter()
        .find(|p| p["name"] == "default/web:http")
        .unwrap();
    let codes: Vec<&serde_json::Value> = web["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["cluster"])
        .collect();
    assert_eq!(codes[0]["status"], "selected");
    assert_eq!(codes[1]["code"], "notReady");
    assert_eq!(codes[2]["code"], "terminating");
}

#[test]
fn the_node_name_comes_from_the_config_when_no_flag_is_given() {
    let dir = scratch("config-node");
    let cfg = dir.join("config.yaml");
    let text = std::fs::read_to_string(example("kube-proxy-config.yaml")).unwrap();
    std::fs::write(
        &cfg,
        text.replace("hostnameOverride: \"\"", "hostnameOverride: node-c"),
    )
    .unwrap();
    let out = kproxy(&[
        "plan",
        "--from",
        &example("cluster.yaml"),
        "--config",
        cfg.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(j["node"], "node-c");
    assert_eq!(j["zone"], "us-east-1c");
    // The flag wins over the file.
    let out = kproxy(&[
        "plan",
        "--from",
        &example("cluster.yaml"),
        "--config",
        cfg.to_str().unwrap(),
        "--hostname-override",
        "node-b",
        "-o",
        "json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(j["node"], "node-b");
}

#[test]
fn bad_objects_are_reported_one_line_each_and_the_good_ones_still_print() {
    let dir = scratch("bad");
    let good = dir.join("a-good.yaml");
    std::fs::write(
        &good,
        "apiVersion: v1\nkind: Service\nmetadata: {name: ok, namespace: default}\n\
         spec: {clusterIP: 10.96.0.5, ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: ftp, namespace: default}\n\
         spec: {clusterIP: 10.96.0.6, ports: [{port: 21, protocol: FTP}]}\n",
    )
    .unwrap();
    let broken = dir.join("b-broken.yaml");
    std::fs::write(&broken, "kind: [unclosed\n").unwrap();
    let missing = dir.join("missing.yaml");
    let out = kproxy(&[
        "plan",
        "--from",
        dir.to_str().unwrap(),
        "--from",
        missing.to_str().unwrap(),
        "--hostname-override",
        "n1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert_eq!(
        lines[0],
        format!(
            "kproxy: {}: service default/ftp: spec.ports[0].protocol: unknown protocol \"FTP\" (want TCP, UDP or SCTP)",
            good.display()
        )
    );
    assert!(
        lines[1].starts_with(&format!("kproxy: {}: document 1: ", broken.display())),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(&format!("kproxy: {}: cannot read: ", missing.display())),
        "{}",
        lines[2]
    );
    let text = stdout(&out);
    assert!(
        text.contains("IPv4  default/ok:http  TCP  ClusterIP"),
        "{text}"
    );
    assert!(!text.contains("default/ftp"));
}

#[test]
fn a_bad_config_file_stops_before_any_output_with_status_2() {
    let dir = scratch("bad-config");
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\noomScoreAdj: 5000\n")
        .unwrap();
    let out = kproxy(&[
        "plan",
        "--from",
        &example("cluster.yaml"),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("kproxy: {}: config: oomScoreAdj", cfg.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn usage_errors_exit_2() {
    let out = kproxy(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--from"));
    let out = kproxy(&["plan", "--from", &example("cluster.yaml"), "-o", "xml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_proxy_mode_prints_its_plan_or_says_it_is_not_in_this_build() {
    for mode in ["iptables", "ipvs", "nftables", "userspace"] {
        let out = kproxy(&[
            "plan",
            "--from",
            &example("cluster.yaml"),
            "--hostname-override",
            "node-a",
            "--proxy-mode",
            mode,
        ]);
        match out.status.code() {
            Some(0) => assert!(
                stdout(&out).contains(&format!("\n== {mode} IPv4 ==\n")),
                "{mode}"
            ),
            Some(2) => {
                assert_eq!(
                    stderr(&out),
                    format!("kproxy: backend {mode} not available in this build\n")
                );
                assert_eq!(stdout(&out), "");
            }
            other => panic!("{mode}: exit {other:?}: {}", stderr(&out)),
        }
    }
}

#[test]
fn json_input_reads_like_the_same_objects_in_yaml() {
    // What `kubectl get svc,endpointslices,nodes -A -o json` prints: the same List.
    let yaml = std::fs::read_to_string(example("cluster.yaml")).unwrap();
    let list: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let file = scratch("json").join("cluster.json");
    std::fs::write(&file, serde_json::to_string_pretty(&list).unwrap()).unwrap();
    let from_json = kproxy(&[
        "plan",
        "--from",
        file.to_str().unwrap(),
        "--hostname-override",
        "node-a",
    ]);
    let from_yaml = kproxy(&[
        "plan",
        "--from",
        &example("cluster.yaml"),
        "--hostname-override",
        "node-a",
    ]);
    assert_eq!(
        from_json.status.code(),
        Some(0),
        "stderr: {}",
        stderr(&from_json)
    );
    assert_eq!(stdout(&from_json), stdout(&from_yaml));
}
