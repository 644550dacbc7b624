//! The stable fuzzing stand-in: every target over its corpus plus N seeded random
//! mutants (`kproxy_fuzz::mutate`). N is 2000 by default; `KPROXY_FUZZ_ITERS=200000
//! cargo test --release --manifest-path fuzz/Cargo.toml --test mutate -- --nocapture`
//! runs longer, and `KPROXY_FUZZ_SEED` picks another sequence. A crash is written to
//! `$TMPDIR/kproxy-fuzz-<target>-crash` for `regressions/<target>/`.

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use kproxy_fuzz::{TARGETS, Target, mutate};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seeds(target: &Target) -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(dir).join(target.name)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("entry").path()).collect();
        paths.sort();
        for p in paths {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if p.is_file() && !hidden {
                out.push(fs::read(p).expect("readable seed"));
            }
        }
    }
    out
}

/// One mutation run at a time: the machine is small and shared.
static LOCK: Mutex<()> = Mutex::new(());

fn fuzz(name: &str) {
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .expect("a known target");
    let iterations = env_number("KPROXY_FUZZ_ITERS", 2000) as usize;
    let rng_seed = env_number("KPROXY_FUZZ_SEED", 0x6b70_726f_7879);
    let result = mutate::run(target.run, &seeds(target), iterations, rng_seed);
    match result {
        Ok(stats) => eprintln!(
            "{name}: {} executions in {:.1?} ({iterations} mutants, seed {rng_seed:#x}), no crash",
            stats.executions, stats.elapsed
        ),
        Err(crash) => {
            let path = std::env::temp_dir().join(format!("kproxy-fuzz-{name}-crash"));
            fs::write(&path, &crash.input).expect("writable temp dir");
            panic!(
                "{name} panicked: {}\ninput ({} bytes) saved to {}",
                crash.message,
                crash.input.len(),
                path.display()
            );
        }
    }
}

#[test]
fn config_parse_survives_mutated_seeds() {
    fuzz("config_parse");
}

#[test]
fn snapshot_parse_survives_mutated_seeds() {
    fuzz("snapshot_parse");
}

#[test]
fn map_build_survives_mutated_seeds() {
    fuzz("map_build");
}

#[test]
fn k8s_objects_survives_mutated_seeds() {
    fuzz("k8s_objects");
}

#[test]
fn ipvs_decode_survives_mutated_seeds() {
    fuzz("ipvs_decode");
}

#[test]
fn iptables_plan_survives_mutated_seeds() {
    fuzz("iptables_plan");
}

#[test]
fn ipvs_plan_survives_mutated_seeds() {
    fuzz("ipvs_plan");
}

#[test]
fn every_target_has_a_mutation_test() {
    let source = include_str!("mutate.rs");
    for t in TARGETS {
        assert!(
            source.contains(&format!("fuzz(\"{}\")", t.name)),
            "no mutation test for {}",
            t.name
        );
    }
}

#[test]
fn mutation_is_deterministic_and_bounded() {
    let seeds = vec![b"kind: Service\n".to_vec(), Vec::new()];
    let (mut a, mut b) = (mutate::Rng::new(7), mutate::Rng::new(7));
    for _ in 0..500 {
        let (x, y) = (
            mutate::mutate(&mut a, &seeds, 64),
            mutate::mutate(&mut b, &seeds, 64),
        );
        assert_eq!(x, y);
        assert!(x.len() <= 64);
    }
}
