//! Every manifest in deploy/ parses into its k8s-openapi type with no field lost (so a
//! misspelled field fails here, not in the cluster), the ConfigMap's config passes
//! KubeProxyConfiguration validation, and the privileges are the ones documented.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kproxy_core::KubeProxyConfiguration;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy")
}

/// Every document of every deploy/*.yaml, by kind.
fn manifests() -> BTreeMap<String, Value> {
    let mut by_kind = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no kind", f.display()))
                .to_owned();
            assert!(by_kind.insert(kind.clone(), doc).is_none(), "two {kind}s");
        }
    }
    by_kind
}

/// Decodes `v` as `T` and checks that encoding it again gives the same document.
fn typed<T: DeserializeOwned + Serialize>(v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        &serde_json::to_value(&t).unwrap(),
        v,
        "fields lost decoding {}",
        v["kind"]
    );
    t
}

#[test]
fn every_manifest_is_a_well_formed_api_object() {
    let m = manifests();
    let kinds: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ]
    );
    let sa: ServiceAccount = typed(&m["ServiceAccount"]);
    let role: ClusterRole = typed(&m["ClusterRole"]);
    let binding: ClusterRoleBinding = typed(&m["ClusterRoleBinding"]);
    let cm: ConfigMap = typed(&m["ConfigMap"]);
    let ds: DaemonSet = typed(&m["DaemonSet"]);

    // The pieces reference each other.
    let sa_name = sa.metadata.name.as_deref().unwrap();
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(sa_name));
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        (sa_name, sa.metadata.namespace.as_deref())
    );
    let cm_volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find_map(|v| v.config_map.as_ref())
        .unwrap();
    assert_eq!(cm_volume.name, cm.metadata.name.clone().unwrap());
}

#[test]
fn the_configmap_holds_a_valid_kube_proxy_configuration_that_the_daemonset_reads() {
    let m = manifests();
    let cm: ConfigMap = typed(&m["ConfigMap"]);
    let text = &cm.data.as_ref().unwrap()["config.conf"];
    let cfg = KubeProxyConfiguration::parse(text).unwrap().with_defaults();
    cfg.validate().unwrap();
    assert_eq!(cfg.metrics_bind_address, "127.0.0.1:10249");
    let ds: DaemonSet = typed(&m["DaemonSet"]);
    let c = &ds.spec.unwrap().template.spec.unwrap().containers[0];
    let args = c.command.as_ref().unwrap();
    assert!(
        args.contains(&"--config=/var/lib/kproxy/config.conf".to_owned()),
        "{args:?}"
    );
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "config")
        .unwrap();
    assert_eq!(mount.mount_path, "/var/lib/kproxy");
    // The liveness probe asks the healthz server the config sets up.
    let probe = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/livez"));
    assert!(
        cfg.healthz_bind_address
            .ends_with(&format!(":{}", serde_json::to_value(&probe.port).unwrap()))
    );
}

#[test]
fn privileges_are_the_least_kproxy_needs() {
    let m = manifests();
    let ds: DaemonSet = typed(&m["DaemonSet"]);
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    let sc = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop.unwrap(), ["ALL"]);
    assert_eq!(caps.add.unwrap(), ["NET_ADMIN", "NET_RAW"]);
    // Only the init container is privileged, and it only sets the conntrack sysctls.
    let init = pod.init_containers.unwrap();
    assert_eq!(init.len(), 1);
    assert_eq!(
        init[0].security_context.as_ref().unwrap().privileged,
        Some(true)
    );
    assert_eq!(init[0].command.as_ref().unwrap()[1], "--init-only");
    assert_eq!(init[0].image, pod.containers[0].image);

    let role: ClusterRole = typed(&m["ClusterRole"]);
    let mut granted = Vec::new();
    for rule in role.rules.unwrap() {
        assert_eq!(rule.verbs, ["list", "watch"], "read-only watches only");
        for r in rule.resources.unwrap() {
            granted.push(format!("{}/{r}", rule.api_groups.as_ref().unwrap()[0]));
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        ["/nodes", "/services", "discovery.k8s.io/endpointslices"]
    );
}

#[test]
fn the_image_carries_the_tools_the_backends_run() {
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let install = dockerfile
        .lines()
        .find(|l| l.contains("apt-get install"))
        .unwrap();
    for tool in ["iptables", "ipset", "conntrack"] {
        assert!(
            install.split_whitespace().any(|w| w == tool),
            "{tool} missing from: {install}"
        );
    }
    assert!(dockerfile.contains("cargo build --release --locked -p kproxy-bin"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/kproxy\"]"));
}
