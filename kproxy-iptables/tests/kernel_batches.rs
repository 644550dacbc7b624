//! Batched restores on the real iptables-nft (root; two throw-away network namespaces,
//! deleted on every path): a full and a partial sync that the proxier writes in several
//! batches leave exactly the rules that single restores of the unbatched plans leave.

#[path = "kernel/netns.rs"]
#[allow(dead_code)] // this test uses only `skip_reason`
mod netns;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kproxy_core::model::IpFamily;
use kproxy_core::{ChangeSet, KubeProxyConfiguration, Object, Proxier};
use kproxy_iptables::exec::{Backend, RealExecutor};
use kproxy_iptables::plan::plan;
use kproxy_iptables::proxier::{IptablesProxier, NFT_RESTORE_BATCH_LINES};
use kproxy_iptables::synth;

/// A namespace deleted on drop (also when the test panics).
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("kp-batch-{}-{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Ns(name)
    }

    fn restore(&self, text: &str) {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.0,
                "iptables-nft-restore",
                "--noflush",
                "-w",
                "5",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("iptables-nft-restore runs");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())
            .expect("restore input written");
        assert!(child.wait().expect("restore ends").success(), "{text}");
    }

    /// `iptables-nft-save -t nat`: each KUBE- chain (but the canaries) and its rules.
    fn kube_chains(&self) -> BTreeMap<String, Vec<String>> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "iptables-nft-save", "-t", "nat"])
            .output()
            .expect("iptables-nft-save runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in text.lines() {
            if let Some(decl) = l.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                chains.entry(name.to_owned()).or_default();
            } else if let Some(rule) = l.strip_prefix("-A ") {
                let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                chains
                    .entry(chain.to_owned())
                    .or_default()
                    .push(spec.to_owned());
            }
        }
        chains.retain(|c, _| c.starts_with("KUBE-") && !c.ends_with("-CANARY"));
        chains
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn batched_full_and_partial_syncs_leave_what_single_restores_leave() {
    if let Some(reason) = netns::skip_reason() {
        eprintln!("skipping kernel test: {reason}");
        return;
    }
    if Command::new("iptables-nft-restore")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping kernel test: no iptables-nft-restore");
        return;
    }
    let (batched, single) = (Ns::new("a"), Ns::new("b"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // 150 services x 10 endpoints: about 6 300 lines of service chains, two batches.
    let n = 150;
    let snap = synth::snapshot(n, 10);
    let m1 = synth::map(&snap);
    let mut after = snap.clone();
    for i in 0..n {
        after.apply(Object::EndpointSlice(synth::slice(i, 10, 1)));
    }
    let m2 = synth::map(&after);
    let node = synth::node();

    let exec = RealExecutor::new(Backend::Nft)
        .with_prefix(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            batched.0.clone(),
        ])
        .with_timeout(Duration::from_secs(120));
    let mut proxier =
        IptablesProxier::new(exec, &KubeProxyConfiguration::default(), &[IpFamily::V4])
            .expect("proxier");
    rt.block_on(proxier.sync(&m1, &ChangeSet::full(), &node))
        .expect("batched full sync");
    let mut cfg = proxier
        .plan_config_mut(IpFamily::V4)
        .expect("IPv4 is configured")
        .clone();
    assert_eq!(cfg.restore_batch_lines, Some(NFT_RESTORE_BATCH_LINES));
    cfg.restore_batch_lines = None;
    // The other namespace gets the base chains and nfacct objects from a proxier
    // syncing an empty cluster (a small plan: one restore), then the plans as one
    // restore each.
    let exec_b = RealExecutor::new(Backend::Nft)
        .with_prefix(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            single.0.clone(),
        ])
        .with_timeout(Duration::from_secs(120));
    let mut base =
        IptablesProxier::new(exec_b, &KubeProxyConfiguration::default(), &[IpFamily::V4])
            .expect("proxier");
    let empty = synth::map(&synth::snapshot(0, 0));
    rt.block_on(base.sync(&empty, &ChangeSet::full(), &node))
        .expect("empty sync");

    let full = plan(&m1, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None);
    assert!(full.batches.is_empty());
    single.restore(&full.text);
    same_chains(&batched.kube_chains(), &single.kube_chains());

    // Every service changes endpoints: a partial sync, again batched.
    let changes = ChangeSet::between(&m1, &m2);
    let stats = rt
        .block_on(proxier.sync(&m2, &changes, &node))
        .expect("batched partial sync");
    assert!(!stats.full);
    let state = full.into_state(None);
    let partial = plan(&m2, &changes, &node, &cfg, IpFamily::V4, Some(&state));
    assert!(!partial.full);
    single.restore(&partial.text);
    let (a, b) = (batched.kube_chains(), single.kube_chains());
    assert!(a.len() > 1600, "{} chains", a.len());
    same_chains(&a, &b);
}

/// Asserts equal chain maps, reporting only the first difference.
fn same_chains(batched: &BTreeMap<String, Vec<String>>, single: &BTreeMap<String, Vec<String>>) {
    let only = |a: &BTreeMap<String, Vec<String>>, b: &BTreeMap<String, Vec<String>>| {
        a.keys()
            .filter(|k| !b.contains_key(*k))
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        only(batched, single).is_empty(),
        "only batched: {:?}",
        only(batched, single)
    );
    assert!(
        only(single, batched).is_empty(),
        "only single: {:?}",
        only(single, batched)
    );
    for (name, rules) in batched {
        assert_eq!(Some(rules), single.get(name), "chain {name}");
    }
}
