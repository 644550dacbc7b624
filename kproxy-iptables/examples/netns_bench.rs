//! Sync timing in a throw-away network namespace (run as root, release build):
//!
//! ```text
//! cargo run --release -p kproxy-iptables --example netns_bench -- [SERVICES] [ENDPOINTS]
//! ```
//!
//! Times a full sync of SERVICES (default 10 000) × ENDPOINTS (default 10) through
//! [`IptablesProxier`] (plan + jump rules + iptables-save + iptables-restore), the bare
//! `iptables-restore` of the same text into a second fresh namespace, and a partial sync
//! after one endpoint change (median of 5), next to the floor of any restore into that
//! table (one rule in a new chain); prints ratios and the process's peak RSS. The
//! namespaces are deleted on exit, also on error.
//!
//! With iptables-nft the proxier writes large plans in batches
//! (`PlanConfig::restore_batch_lines`); the reference is still one `iptables-restore`
//! of the whole text, as upstream loads it.
//!
//! Environment: `KPROXY_BENCH_BACKEND=legacy|nft` picks the iptables flavour (default:
//! plain `iptables-restore`); `KPROXY_BENCH_REFERENCE_LIMIT=SECONDS` kills the reference
//! restore after that long (default 900; 0 skips it); `KPROXY_BENCH_NS` names the
//! namespaces (`<prefix>-a`, `<prefix>-b`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kproxy_core::model::IpFamily;
use kproxy_core::{ChangeSet, KubeProxyConfiguration, Object, Proxier};
use kproxy_iptables::exec::{Backend, Executor, RealExecutor, RestoreFlags};
use kproxy_iptables::plan::{PlanConfig, plan};
use kproxy_iptables::proxier::IptablesProxier;
use kproxy_iptables::synth;

struct Ns(String);

impl Ns {
    fn new(name: String) -> Result<Ns, String> {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map_err(|e| e.to_string())?;
        if !ok.success() {
            return Err(format!("ip netns add {name} failed (not root?)"));
        }
        Ok(Ns(name))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn backend() -> (Backend, &'static str) {
    match std::env::var("KPROXY_BENCH_BACKEND").as_deref() {
        Ok("legacy") => (Backend::Legacy, "iptables-legacy-restore"),
        Ok("nft") => (Backend::Nft, "iptables-nft-restore"),
        _ => (Backend::Default, "iptables-restore"),
    }
}

/// Times `iptables-restore` of `text` in `ns`; `None` when it has not finished within
/// `limit` (it is killed then: iptables-nft's time grows much faster than its input).
fn raw_restore(ns: &str, text: &str, limit: Duration) -> Result<Option<Duration>, String> {
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            backend().1,
            "--noflush",
            "--counters",
            "-w",
            "5",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // iptables-restore reads as it parses: write from a thread, so that the limit
    // applies while the input is still going in.
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let input = text.to_owned();
    let writer = std::thread::spawn(move || {
        // A killed restore closes the pipe: that error is expected then.
        let _ = stdin.write_all(input.as_bytes());
    });
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let elapsed = start.elapsed();
            let _ = writer.join();
            if !status.success() {
                return Err("iptables-restore failed".into());
            }
            return Ok(Some(elapsed));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writer.join();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An IPv4 proxier with default settings over the real iptables of `ns`.
fn proxier_in(ns: &Ns) -> Result<IptablesProxier<RealExecutor>, String> {
    let exec = RealExecutor::new(backend().0)
        .with_prefix(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            ns.0.clone(),
        ])
        .with_timeout(Duration::from_secs(600));
    IptablesProxier::new(exec, &KubeProxyConfiguration::default(), &[IpFamily::V4])
        .map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, k) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(10),
    );
    // bench/iptables.sh passes a prefix it deletes on exit, also after a timeout kills
    // this process before its `Drop`s run.
    let prefix = std::env::var("KPROXY_BENCH_NS")
        .unwrap_or_else(|_| format!("kp-bench-{}", std::process::id()));
    let a = Ns::new(format!("{prefix}-a"))?;
    let b = Ns::new(format!("{prefix}-b"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    let snap = synth::snapshot(n, k);
    let map = synth::map(&snap);
    let node = synth::node();
    let cfg = PlanConfig::defaults(IpFamily::V4);

    let start = Instant::now();
    let planned = plan(&map, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None).text;
    let plan_time = start.elapsed();
    let lines = planned.lines().count();
    drop(planned);

    let mut proxier = proxier_in(&a)?;
    let start = Instant::now();
    rt.block_on(proxier.sync(&map, &ChangeSet::full(), &node))
        .map_err(|e| format!("{e:?}"))?;
    let full_time = start.elapsed();

    let limit = Duration::from_secs(
        std::env::var("KPROXY_BENCH_REFERENCE_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(900),
    );
    // The reference host is prepared as a node is: a proxier syncing an empty cluster
    // puts the jump rules from the built-in chains (the kernel checks the whole jump
    // graph from them on every load), the canaries and the nfacct objects in place. It
    // then loads, in one restore as upstream does, exactly the rules kproxy loaded:
    // the plan for the proxier's own settings, unbatched.
    let mut settings = proxier
        .plan_config_mut(IpFamily::V4)
        .ok_or("IPv4 not configured")?
        .clone();
    let restores = plan(
        &map,
        &ChangeSet::full(),
        &node,
        &settings,
        IpFamily::V4,
        None,
    )
    .batches
    .len()
        + 1;
    settings.restore_batch_lines = None;
    let text = plan(
        &map,
        &ChangeSet::full(),
        &node,
        &settings,
        IpFamily::V4,
        None,
    )
    .text;
    // A limit of 0 skips the reference (iptables-nft at 10 000 services takes hours).
    let raw_time = if limit.is_zero() {
        None
    } else {
        let mut base = proxier_in(&b)?;
        let empty = synth::map(&synth::snapshot(0, 0));
        rt.block_on(base.sync(&empty, &ChangeSet::full(), &node))
            .map_err(|e| format!("{e:?}"))?;
        raw_restore(&b.0, &text, limit)?
    };

    // Partial syncs: one endpoint of one service changes, five times (other services
    // each time); the median is reported, so one scheduling hiccup does not decide it.
    let mut before = map;
    let mut after = snap.clone();
    let mut partials = Vec::new();
    let mut stats = None;
    for i in 0..5 {
        after.apply(Object::EndpointSlice(synth::slice(
            (n / 2 + i) % n.max(1),
            k,
            1,
        )));
        let after_map = synth::map(&after);
        let changes = ChangeSet::between(&before, &after_map);
        let start = Instant::now();
        stats = Some(
            rt.block_on(proxier.sync(&after_map, &changes, &node))
                .map_err(|e| format!("{e:?}"))?,
        );
        partials.push(start.elapsed());
        before = after_map;
    }
    partials.sort();
    let partial_time = partials[partials.len() / 2];
    let stats = stats.ok_or("no partial sync")?;

    // The floor of any restore into this table: one RETURN rule in a new, unreferenced
    // chain (then deleted, untimed). With iptables-nft the kernel validates the whole
    // jump graph from the base chains on every commit that adds a rule.
    let mut floors = Vec::new();
    for i in 0..5 {
        let chain = format!("KUBE-BENCH-FLOOR-{i}");
        let add = format!("*nat\n:{chain} - [0:0]\n-A {chain} -j RETURN\nCOMMIT\n");
        let start = Instant::now();
        rt.block_on(
            proxier
                .executor()
                .restore(IpFamily::V4, &add, RestoreFlags::default()),
        )
        .map_err(|e| e.to_string())?;
        floors.push(start.elapsed());
        let del = format!("*nat\n:{chain} - [0:0]\n-X {chain}\nCOMMIT\n");
        rt.block_on(
            proxier
                .executor()
                .restore(IpFamily::V4, &del, RestoreFlags::default()),
        )
        .map_err(|e| e.to_string())?;
    }
    floors.sort();
    let floor = floors[floors.len() / 2];

    println!("backend: {}", backend().1);
    println!(
        "services: {n} x {k} endpoints, restore input {lines} lines, {} KiB",
        text.len() / 1024
    );
    println!("plan only (full):               {plan_time:>10.3?}");
    println!("kproxy full sync (all steps):   {full_time:>10.3?}  ({restores} restores)");
    match raw_time {
        Some(raw) => {
            println!("iptables-restore alone:         {raw:>10.3?}");
            println!(
                "  full sync / restore alone:    {:>10.2}x",
                full_time.as_secs_f64() / raw.as_secs_f64()
            );
        }
        None if limit.is_zero() => println!("iptables-restore alone:         skipped"),
        None => {
            println!("iptables-restore alone:         not done after {limit:?} (killed)");
            println!(
                "  full sync / restore alone:    <{:>9.3}x",
                full_time.as_secs_f64() / limit.as_secs_f64()
            );
        }
    }
    println!(
        "kproxy partial sync (1 ep):     {partial_time:>10.3?}  (median of 5, {partials:.1?}; {} rules written, full={})",
        stats.objects_written, stats.full
    );
    println!(
        "  full sync / partial sync:     {:>10.1}x",
        full_time.as_secs_f64() / partial_time.as_secs_f64()
    );
    println!("one-rule restore (floor):       {floor:>10.3?}  (median of 5)");
    println!("peak RSS:                       {:>10} KiB", peak_rss_kib());
    Ok(())
}
