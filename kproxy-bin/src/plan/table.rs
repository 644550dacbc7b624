//! The `table` output of `kproxy plan`: one block per service port, aligned for people.
//!
//! ```text
//! IPv4  default/web:http  TCP  NodePort
//!   clusterIP            10.96.0.20:80
//!   nodePort             30080
//!   policies             external=Local internal=Cluster
//!   endpoints            ADDRESS        CONDITIONS  NODE  ZONE  CLUSTER   LOCAL
//!                        10.0.0.1:8080  ready       a     -     selected  selected
//!   cluster traffic      10.0.0.1:8080, 10.0.0.2:8080
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::report::{EndpointReport, PlanReport, PortReport, Reach, TrafficReport};

/// Width of the key column of each port block.
const KEY_WIDTH: usize = 21;

/// Renders the whole report.
pub fn render(report: &PlanReport) -> String {
    let mut out = String::new();
    let zone = report.zone.as_deref().unwrap_or("-");
    let found = if report.node_found {
        ""
    } else {
        " (no Node object in the input)"
    };
    let _ = writeln!(out, "node: {}{found}", report.node);
    let _ = writeln!(out, "zone: {zone}");
    let counts: Vec<String> = report
        .families
        .iter()
        .map(|f| format!("{} {}", f.service_ports.len(), f.family))
        .collect();
    let counts = if counts.is_empty() {
        "none".to_owned()
    } else {
        counts.join(", ")
    };
    let _ = writeln!(out, "service ports: {counts}");
    for fam in &report.families {
        for port in &fam.service_ports {
            out.push('\n');
            render_port(&mut out, &fam.family, port);
        }
    }
    out
}

fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "  {key:<KEY_WIDTH$}{value}");
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn with_port(ips: &[IpAddr], port: u16) -> String {
    join(
        &ips.iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect::<Vec<_>>(),
    )
}

fn render_port(out: &mut String, family: &str, p: &PortReport) {
    let _ = writeln!(
        out,
        "{family}  {}  {}  {}",
        p.name, p.protocol, p.service_type
    );
    line(
        out,
        "clusterIP",
        &SocketAddr::new(p.cluster_ip, p.port).to_string(),
    );
    if let Some(np) = p.node_port {
        line(out, "nodePort", &np.to_string());
    }
    if !p.external_ips.is_empty() {
        line(out, "externalIPs", &with_port(&p.external_ips, p.port));
    }
    if !p.load_balancer_ips.is_empty() {
        line(
            out,
            "loadBalancerIPs",
            &with_port(&p.load_balancer_ips, p.port),
        );
    }
    if !p.load_balancer_source_ranges.is_empty() {
        line(
            out,
            "sourceRanges",
            &p.load_balancer_source_ranges.join(", "),
        );
    }
    let mut policies = format!(
        "external={} internal={}",
        p.external_traffic_policy, p.internal_traffic_policy
    );
    if let Some(t) = p.session_affinity_timeout_seconds {
        let _ = write!(policies, " affinity=ClientIP({t}s)");
    }
    if p.topology != "None" {
        let _ = write!(policies, " topology={}", p.topology);
    }
    line(out, "policies", &policies);
    if let Some(hc) = p.health_check_node_port {
        line(out, "healthCheckNodePort", &hc.to_string());
    }
    render_endpoints(out, &p.endpoints);
    let t = &p.traffic;
    if let Some(cluster) = &t.cluster {
        line(
            out,
            "cluster traffic",
            &endpoint_set(cluster, t.cluster_uses_terminating),
        );
    }
    if let Some(local) = &t.local {
        line(
            out,
            "local traffic",
            &endpoint_set(local, t.local_uses_terminating),
        );
    }
    line(out, "clusterIP uses", &uses(t, &t.cluster_ip_uses));
    if let Some(ext) = &t.external_uses {
        line(out, "external uses", &uses(t, ext));
    }
}

/// Which set a traffic class uses, and what happens when that set is empty: upstream
/// rejects traffic of a port without any endpoint, and drops Local-policy traffic that
/// has endpoints only on other nodes.
fn uses(t: &TrafficReport, set: &str) -> String {
    let empty = match set {
        "local" => t.local.as_ref().is_none_or(Vec::is_empty),
        _ => t.cluster.as_ref().is_none_or(Vec::is_empty),
    };
    match (t.has_any_endpoints, empty) {
        (false, _) => format!("{set} (no endpoints: rejected)"),
        (true, true) => format!("{set} (no local endpoints: dropped)"),
        (true, false) => set.to_owned(),
    }
}

fn endpoint_set(eps: &[SocketAddr], terminating: bool) -> String {
    match (eps.is_empty(), terminating) {
        (true, _) => "none".to_owned(),
        (false, false) => join(eps),
        (false, true) => format!("{} (serving-terminating fallback)", join(eps)),
    }
}

fn conditions(e: &EndpointReport) -> String {
    let mut c = Vec::new();
    if e.ready {
        c.push("ready");
    } else {
        c.push("not-ready");
    }
    if e.serving && !e.ready {
        c.push("serving");
    }
    if e.terminating {
        c.push("terminating");
    }
    c.join(",")
}

fn reach(r: &Reach) -> String {
    match r {
        Reach::Selected => "selected".to_owned(),
        Reach::Excluded { reason, .. } => format!("no: {reason}"),
        Reach::NotUsed => "-".to_owned(),
    }
}

fn render_endpoints(out: &mut String, eps: &[EndpointReport]) {
    if eps.is_empty() {
        line(out, "endpoints", "none");
        return;
    }
    let mut rows: Vec<[String; 6]> =
        vec![["ADDRESS", "CONDITIONS", "NODE", "ZONE", "CLUSTER", "LOCAL"].map(str::to_owned)];
    for e in eps {
        let dash = || "-".to_owned();
        rows.push([
            e.address.to_string(),
            conditions(e),
            e.node.clone().unwrap_or_else(dash),
            e.zone.clone().unwrap_or_else(dash),
            reach(&e.cluster),
            reach(&e.local_policy),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for (i, row) in rows.iter().enumerate() {
        let mut text = String::new();
        for (j, (cell, w)) in row.iter().zip(widths).enumerate() {
            if j + 1 == row.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        line(out, if i == 0 { "endpoints" } else { "" }, text.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::report::FamilyReport;

    fn port(endpoints: Vec<EndpointReport>, traffic: TrafficReport) -> PortReport {
        PortReport {
            name: "default/web:http".into(),
            protocol: "TCP".into(),
            service_type: "ClusterIP".into(),
            cluster_ip: "10.96.0.20".parse().unwrap(),
            port: 80,
            node_port: None,
            external_ips: vec![],
            load_balancer_ips: vec![],
            load_balancer_source_ranges: vec![],
            external_traffic_policy: "Cluster".into(),
            internal_traffic_policy: "Cluster".into(),
            session_affinity_timeout_seconds: None,
            health_check_node_port: None,
            topology: "None".into(),
            traffic,
            endpoints,
        }
    }

    #[test]
    fn a_port_without_endpoints_says_its_traffic_is_rejected() {
        let traffic = TrafficReport {
            cluster: Some(vec![]),
            cluster_uses_terminating: false,
            local: None,
            local_uses_terminating: false,
            cluster_ip_uses: "cluster".into(),
            external_uses: None,
            has_any_endpoints: false,
        };
        let report = PlanReport {
            node: "a".into(),
            node_found: false,
            zone: None,
            families: vec![FamilyReport {
                family: "IPv4".into(),
                service_ports: vec![port(vec![], traffic)],
            }],
        };
        let text = render(&report);
        assert_eq!(
            text,
            "node: a (no Node object in the input)\nzone: -\nservice ports: 1 IPv4\n\n\
             IPv4  default/web:http  TCP  ClusterIP\n\
             \x20 clusterIP            10.96.0.20:80\n\
             \x20 policies             external=Cluster internal=Cluster\n\
             \x20 endpoints            none\n\
             \x20 cluster traffic      none\n\
             \x20 clusterIP uses       cluster (no endpoints: rejected)\n"
        );
    }

    #[test]
    fn endpoint_rows_are_aligned_under_their_header() {
        let ep = |addr: &str, ready: bool| EndpointReport {
            address: addr.parse().unwrap(),
            ready,
            serving: true,
            terminating: !ready,
            node: Some("node-a".into()),
            zone: None,
            local: true,
            cluster: if ready {
                Reach::Selected
            } else {
                Reach::Excluded {
                    code: "terminating".into(),
                    reason: "terminating (ready endpoints exist)".into(),
                }
            },
            local_policy: Reach::NotUsed,
        };
        let mut out = String::new();
        render_endpoints(
            &mut out,
            &[ep("10.0.0.1:8080", true), ep("10.0.0.22:8080", false)],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str, word: &str| l.find(word).unwrap();
        assert_eq!(col(lines[0], "CLUSTER"), col(lines[1], "selected"));
        assert_eq!(col(lines[0], "CLUSTER"), col(lines[2], "no: terminating"));
        assert!(lines[2].contains("serving,terminating"));
    }
}
