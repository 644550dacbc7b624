//! Reading Kubernetes objects from files: `--from FILE|DIR`, for `kproxy plan` and the
//! file source of `kproxy run`.
//!
//! A directory stands for its `*.yaml`, `*.yml` and `*.json` files (not recursive, hidden
//! names skipped, sorted by name), so a ConfigMap mounted as a volume works: its
//! `..data` entries start with a dot. Every file adds to one [`Snapshot`]; a bad file or
//! object is reported and skipped, and never poisons the others.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kproxy_core::Snapshot;

/// One problem with the input: the file, and what is wrong in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// What is wrong, naming the object where there is one.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// The objects read from every input, and what was wrong.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The good objects of every file.
    pub snapshot: Snapshot,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

/// Whether a directory entry named `name` is an input file.
fn is_input_file(name: &str) -> bool {
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

/// The files `paths` stand for: files as given, directories as their input files sorted
/// by name.
pub fn expand(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Problem>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(is_input_file))
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(e) => problems.push(Problem {
                path: path.clone(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    (files, problems)
}

/// Reads every input into one snapshot. Later files replace objects of the same name.
pub fn load(paths: &[PathBuf]) -> Loaded {
    let (files, problems) = expand(paths);
    let mut loaded = Loaded {
        snapshot: Snapshot::new(),
        problems,
    };
    for file in files {
        load_file(&file, &mut loaded);
    }
    loaded
}

fn load_file(file: &Path, loaded: &mut Loaded) {
    let problem = |message: String| Problem {
        path: file.to_owned(),
        message,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            loaded.problems.push(problem(format!("cannot read: {e}")));
            return;
        }
    };
    match loaded.snapshot.add_documents(&text) {
        Ok(errs) => loaded
            .problems
            .extend(errs.into_iter().map(|e| problem(e.to_string()))),
        Err(e) => loaded.problems.push(problem(e.to_string())),
    }
}

/// What the file source compares to notice a change: each input path and expanded
/// file with its modification time and length (`None` when it cannot be read).
pub type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// The current [`Fingerprint`] of `paths`. Directories are included themselves, so adding
/// or removing a file shows even when no listed file changed.
pub fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let (files, _) = expand(paths);
    paths
        .iter()
        .chain(files.iter())
        .map(|p| {
            let meta = std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p.clone(), meta)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n";

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kproxy-input-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn directory_reads_sorted_input_files_and_skips_hidden_and_other_names() {
        let dir = tempdir("dir");
        std::fs::write(dir.join("b.yml"), "").unwrap();
        std::fs::write(dir.join("a.json"), "").unwrap();
        std::fs::write(dir.join(".hidden.yaml"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        std::fs::create_dir(dir.join("sub.yaml")).unwrap();
        let (files, problems) = expand(std::slice::from_ref(&dir));
        assert!(problems.is_empty());
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.json", "b.yml"]);
    }

    #[test]
    fn a_bad_file_is_reported_and_the_good_one_still_loads() {
        let dir = tempdir("bad");
        std::fs::write(dir.join("good.yaml"), SVC).unwrap();
        std::fs::write(dir.join("bad.yaml"), "kind: [unclosed\n").unwrap();
        let missing = dir.join("missing.yaml");
        let loaded = load(&[dir.clone(), missing.clone()]);
        assert_eq!(loaded.snapshot.services().count(), 1);
        assert_eq!(loaded.problems.len(), 2);
        assert_eq!(loaded.problems[0].path, dir.join("bad.yaml"));
        assert_eq!(loaded.problems[1].path, missing);
        assert!(
            loaded.problems[1].message.starts_with("cannot read: "),
            "{}",
            loaded.problems[1]
        );
    }

    #[test]
    fn fingerprint_changes_when_a_file_is_added_or_rewritten() {
        let dir = tempdir("fp");
        std::fs::write(dir.join("a.yaml"), SVC).unwrap();
        let before = fingerprint(std::slice::from_ref(&dir));
        std::fs::write(dir.join("b.yaml"), SVC).unwrap();
        let added = fingerprint(std::slice::from_ref(&dir));
        assert_ne!(before, added);
        std::fs::write(dir.join("a.yaml"), format!("{SVC}\n# longer\n")).unwrap();
        assert_ne!(added, fingerprint(std::slice::from_ref(&dir)));
    }
}
