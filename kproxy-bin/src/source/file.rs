//! The file source: `--from FILE|DIR`. Loads the files, sends their objects as one
//! `Reset`, then polls their modification times every second (no inotify dependency)
//! and sends a new `Reset` when anything changed. Problems are logged, once per load;
//! bad objects are skipped, as in `kproxy plan`.

use std::path::PathBuf;
use std::time::Duration;

use kproxy_core::Event;
use tokio::sync::mpsc;

use super::reset_of;
use crate::input;

/// How often the files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until the receiver is dropped: one `Reset` now, one per change.
pub async fn run(paths: Vec<PathBuf>, tx: mpsc::Sender<Event>, poll: Duration) {
    let mut seen = None;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if tx.is_closed() {
            return;
        }
        let current = input::fingerprint(&paths);
        if seen.as_ref() == Some(&current) {
            continue;
        }
        let loaded = input::load(&paths);
        for p in &loaded.problems {
            tracing::warn!(
                file = %crate::error::one_line(&p.path.display()),
                problem = %crate::error::one_line(&p.message),
                "skipping bad input"
            );
        }
        tracing::info!(
            services = loaded.snapshot.services().count(),
            slices = loaded.snapshot.slices().count(),
            nodes = loaded.snapshot.nodes().count(),
            "loaded objects from files"
        );
        if tx.send(reset_of(&loaded.snapshot)).await.is_err() {
            return;
        }
        seen = Some(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: NAME, namespace: default}\n\
                       spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n";

    fn service_names(ev: &Event) -> Vec<String> {
        let Event::Reset(objects) = ev else {
            panic!("not a reset: {ev:?}")
        };
        objects
            .iter()
            .filter_map(|o| match o {
                kproxy_core::Object::Service(s) => Some(s.id.name.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn sends_a_reset_at_start_and_another_after_a_change() {
        let dir = std::env::temp_dir().join(format!("kproxy-file-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), SVC.replace("NAME", "a")).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(run(vec![dir.clone()], tx, Duration::from_millis(20)));
        let first = rx.recv().await.unwrap();
        assert_eq!(service_names(&first), ["a"]);
        // Nothing changed: no second event within a few polls.
        let quiet = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
        assert!(quiet.is_err(), "unexpected event {quiet:?}");
        std::fs::write(dir.join("b.yaml"), SVC.replace("NAME", "b")).unwrap();
        let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(service_names(&second), ["a", "b"]);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
