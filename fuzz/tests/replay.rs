//! Replays every file of `corpus/<target>/` and `regressions/<target>/` through its
//! target's logic: what CI runs on stable (`cargo test --manifest-path fuzz/Cargo.toml`).
//! Also checks that `TARGETS`, `Cargo.toml`, `fuzz_targets/` and the corpus folders
//! agree, so that a half-added target fails here.

use std::fs;
use std::path::{Path, PathBuf};

use kproxy_fuzz::TARGETS;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dir`, sorted, skipping dotfiles (`.gitkeep`) and READMEs.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && !name.eq_ignore_ascii_case("README.md")
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_file_replays_clean() {
    let mut total = 0;
    for t in TARGETS {
        let corpus = files(&root().join("corpus").join(t.name));
        assert!(!corpus.is_empty(), "corpus/{} has no seeds", t.name);
        let regressions = files(&root().join("regressions").join(t.name));
        for path in corpus.iter().chain(&regressions) {
            let data = fs::read(path).expect("readable corpus file");
            let outcome = std::panic::catch_unwind(|| (t.run)(&data));
            assert!(outcome.is_ok(), "{} panicked on {}", t.name, path.display());
            total += 1;
        }
        eprintln!(
            "{}: {} seeds, {} regressions replayed",
            t.name,
            corpus.len(),
            regressions.len()
        );
    }
    assert!(total >= TARGETS.len());
}

#[test]
fn targets_agree_with_cargo_toml_fuzz_targets_and_corpus_folders() {
    let manifest = fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    for t in TARGETS {
        let bin = format!(
            "name = \"{0}\"\npath = \"fuzz_targets/{0}.rs\"\ntest = false\ndoc = false\nbench = false\nrequired-features = [\"libfuzzer\"]",
            t.name
        );
        assert!(
            manifest.contains(&bin),
            "Cargo.toml lacks the [[bin]] of {}",
            t.name
        );
        let file = root().join("fuzz_targets").join(format!("{}.rs", t.name));
        let source = fs::read_to_string(&file).expect("fuzz_targets/<target>.rs exists");
        assert!(
            source.contains(&format!("kproxy_fuzz::{}(data)", t.name)),
            "{} does not call kproxy_fuzz::{}",
            file.display(),
            t.name
        );
        assert!(root().join("regressions").join(t.name).is_dir());
    }
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    for dir in ["corpus", "regressions", "fuzz_targets"] {
        for entry in fs::read_dir(root().join(dir)).expect(dir) {
            let path = entry.expect("entry").path();
            let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || name.eq_ignore_ascii_case("README") {
                continue;
            }
            assert!(
                names.contains(&name),
                "{dir}/{name} belongs to no target in TARGETS"
            );
        }
    }
    assert_eq!(
        manifest.lines().filter(|l| *l == "[[bin]]").count(),
        TARGETS.len()
    );
}

/// `open/<target>/` holds inputs that still break an invariant, each waiting on a fix
/// in another crate (README.md says which). They must still fail: when one passes, the
/// fix has landed and the file belongs in `regressions/<target>/`.
#[test]
fn open_findings_still_fail_until_fixed() {
    let Ok(dirs) = fs::read_dir(root().join("open")) else {
        return;
    };
    // The panics below are expected; libtest shows their messages only if this fails.
    let mut fixed = Vec::new();
    for dir in dirs {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let target = TARGETS
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("open/{name} belongs to no target"));
        for path in files(&dir) {
            let data = fs::read(&path).expect("readable finding");
            if std::panic::catch_unwind(|| (target.run)(&data)).is_ok() {
                fixed.push(path.display().to_string());
            }
        }
    }
    assert!(
        fixed.is_empty(),
        "fixed, move to regressions/<target>/ and update README.md: {fixed:?}"
    );
}
