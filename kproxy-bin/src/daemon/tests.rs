//! The daemon in-process: the file source on the bundled example, a `RecordingProxier`,
//! and real HTTP requests to the healthz and metrics servers over 127.0.0.1.

use std::path::Path;

use kproxy_core::{ProxierCall, RecordingProxier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(super) async fn get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: kproxy\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut raw))
        .await
        .ok()?
        .ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((
        head[9..12].parse().ok()?,
        head.to_ascii_lowercase(),
        body.to_owned(),
    ))
}

fn settings(healthz: u16, metrics: u16) -> Settings {
    let cfg = KubeProxyConfiguration {
        healthz_bind_address: format!("127.0.0.1:{healthz}"),
        metrics_bind_address: format!("127.0.0.1:{metrics}"),
        ..KubeProxyConfiguration::default()
    };
    let examples = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples/cluster.yaml");
    Settings {
        cfg,
        config_path: None,
        node_name: "node-a".into(),
        master: None,
        from: vec![examples],
        api: source::kube::Tuning::default(),
    }
}

#[tokio::test]
async fn serves_health_and_metrics_and_syncs_the_files_until_stopped() {
    let (hz, mp) = (free_port(), free_port());
    let proxier = RecordingProxier::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run_with(
        settings(hz, mp),
        Box::new(proxier.clone()),
        "recording",
        Arc::new(Metrics::new()),
        async move {
            let _ = stop_rx.await;
            Ok(())
        },
    ));

    // /healthz turns 200 once the first sync is done and the Node object is known.
    let mut healthz = None;
    for _ in 0..100 {
        if let Some(r @ (200, _, _)) = get(hz, "/healthz").await {
            healthz = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, head, body) = healthz.expect("healthz never became healthy");
    assert!(head.contains("content-type: application/json"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["nodeEligible"], true);
    assert_eq!(json["status"]["IPv4"]["healthy"], true);
    let (code, _, body) = get(hz, "/livez").await.unwrap();
    assert_eq!(code, 200);
    assert!(!body.contains("nodeEligible"));

    let calls = proxier.calls();
    let ProxierCall::Sync { map, changes, node } = &calls[0] else {
        panic!("{calls:?}")
    };
    assert!(changes.full);
    assert_eq!(
        map.len(),
        12,
        "11 IPv4 and 1 IPv6 service ports in the example"
    );
    assert_eq!(
        node.node_ips,
        [
            "10.0.1.10".parse::<IpAddr>().unwrap(),
            "fd00:10:0:1::10".parse().unwrap()
        ]
    );

    let (code, head, text) = get(mp, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(
        text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}"),
        "{text}"
    );
    assert!(
        text.contains("kubeproxy_proxy_healthz_total{code=\"200\"} 1"),
        "{text}"
    );
    assert_eq!(get(mp, "/proxyMode").await.unwrap().2, "recording");
    assert_eq!(get(mp, "/healthz").await.unwrap().2, "ok");
    let (_, _, configz) = get(mp, "/configz").await.unwrap();
    let configz: serde_json::Value = serde_json::from_str(&configz).unwrap();
    assert_eq!(
        configz["kubeproxy.config.k8s.io"]["healthzBindAddress"],
        format!("127.0.0.1:{hz}")
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        proxier
            .calls()
            .iter()
            .all(|c| matches!(c, ProxierCall::Sync { .. })),
        "rules left in place"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        get(hz, "/healthz").await.is_none(),
        "healthz server outlived the daemon"
    );
}

#[tokio::test]
async fn a_taken_port_is_fatal_only_with_bind_address_hard_fail() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut s = settings(port, free_port());
    s.cfg.bind_address_hard_fail = true;
    let err = run_with(
        s.clone(),
        Box::new(RecordingProxier::default()),
        "recording",
        Arc::new(Metrics::new()),
        async { Ok(()) },
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.report()
            .starts_with(&format!("healthz server on 127.0.0.1:{port}: ")),
        "{}",
        err.report()
    );
    s.cfg.bind_address_hard_fail = false;
    run_with(
        s,
        Box::new(RecordingProxier::default()),
        "recording",
        Arc::new(Metrics::new()),
        async { Ok(()) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_changed_config_file_stops_the_daemon_so_it_restarts() {
    let dir = std::env::temp_dir().join(format!("kproxy-config-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.conf");
    std::fs::write(&path, "kind: KubeProxyConfiguration\n").unwrap();
    let watcher = tokio::spawn(watch_config(Some(path.clone())));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!watcher.is_finished(), "stopped without a change");
    std::fs::write(&path, "kind: KubeProxyConfiguration\nmode: ipvs\n").unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.report()
            .ends_with(": content of the proxy server's configuration file was updated")
    );
}
