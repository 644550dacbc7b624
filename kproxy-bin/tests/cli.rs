//! The `kproxy` command line end to end: version, the effective config written by
//! `--write-config-to` (which shows the flag/file precedence), and usage errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kproxy_core::KubeProxyConfiguration;
use kproxy_core::config::ProxyMode;

fn kproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(args)
        .output()
        .unwrap()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs kproxy with `args` plus `--write-config-to`, and parses what it wrote.
fn effective_config(name: &str, args: &[&str]) -> KubeProxyConfiguration {
    let out_file = scratch(name).join("out.yaml");
    let out = kproxy(&[args, &["--write-config-to", out_file.to_str().unwrap()]].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&out_file).unwrap();
    let cfg = KubeProxyConfiguration::parse(&written).unwrap();
    cfg.validate().unwrap();
    cfg
}

#[test]
fn version_prints_the_crate_version() {
    let out = kproxy(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("kproxy {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn write_config_to_writes_the_effective_config_from_flags() {
    let cfg = effective_config(
        "flags",
        &[
            "--proxy-mode",
            "ipvs",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--masquerade-all",
        ],
    );
    assert_eq!(cfg.mode, ProxyMode::Ipvs);
    assert_eq!(cfg.cluster_cidr, "10.244.0.0/16");
    assert!(cfg.iptables.masquerade_all);
    assert_eq!(cfg.healthz_bind_address, "0.0.0.0:10256");
}

#[test]
fn with_config_the_file_wins_over_config_flags_but_not_hostname_override() {
    let file = example("kube-proxy-config.yaml");
    let cfg = effective_config(
        "file",
        &[
            "--config",
            &file,
            "--proxy-mode",
            "ipvs",
            "--cluster-cidr",
            "192.168.0.0/16",
            "--hostname-override",
            "Node-X",
        ],
    );
    assert_eq!(cfg.mode, ProxyMode::Iptables);
    assert_eq!(cfg.cluster_cidr, "10.244.0.0/16,fd00:10:244::/56");
    assert_eq!(cfg.hostname_override, "Node-X");
    assert_eq!(
        cfg.client_connection.kubeconfig,
        "/var/lib/kube-proxy/kubeconfig.conf"
    );
    // The written file reads back to the same config.
    assert_eq!(
        effective_config(
            "roundtrip",
            &["--config", &file, "--hostname-override", "Node-X"]
        ),
        cfg
    );
}

#[test]
fn an_invalid_config_from_flags_or_file_exits_2_with_one_line() {
    let out = kproxy(&["--iptables-masquerade-bit=40"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("kproxy: flags: config: iptables.masqueradeBit"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);

    let bad = scratch("bad").join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: magic\n",
    )
    .unwrap();
    let out = kproxy(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!("kproxy: {}: config: ", bad.display())),
        "{err}"
    );
    assert!(err.contains("magic"), "{err}");

    let out = kproxy(&["--config", "/nonexistent/kproxy.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("kproxy: /nonexistent/kproxy.yaml: cannot read: "),
        "{err}"
    );
}

#[test]
fn unknown_flags_and_values_are_usage_errors() {
    assert_eq!(kproxy(&["--no-such-flag"]).status.code(), Some(2));
    assert_eq!(
        kproxy(&["--proxy-mode", "kernelspace"]).status.code(),
        Some(2)
    );
    assert_eq!(
        kproxy(&["--iptables-sync-period", "soon"]).status.code(),
        Some(2)
    );
}
