//! The Kubernetes source: Services, EndpointSlices and this Node, watched with kube-rs
//! using upstream kube-proxy's informer filters (`cmd/kube-proxy/app/server.go`).
//!
//! Each watcher is a kube-rs [`watcher`] with `default_backoff()` (800 ms doubling to
//! 30 s, with jitter, never giving up): a `410 Gone` relists, a dropped connection
//! re-watches from the last resourceVersion, errors are retried. An outage is logged
//! once per resource at warn when it starts, again every [`Tuning::warn_every`] while it
//! lasts, and at info when the watch works again; each error also counts in
//! `kubeproxy_watch_errors_total`. The client has a read timeout
//! ([`Tuning::read_timeout`]), so a request to an API server that accepts connections
//! but never answers fails and is retried instead of hanging forever. [`Aggregator`] turns the three streams into core events with one readiness
//! barrier: nothing is sent until every resource has finished its first list; then one
//! `Reset` with all objects. A later relist of any resource (`Init`…`InitDone`) sends a
//! new `Reset` of everything, so objects that vanished during a gap are dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1 as core_api;
use k8s_openapi::api::discovery::v1 as discovery_api;
use kproxy_core::model::ObjectRef;
use kproxy_core::{Event, Object, ObjectKey, convert};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, Result, chain, one_line};

/// How the watch path retries and reports; [`Tuning::default`] in the daemon, shorter
/// in tests so that minutes of outage take a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// `None`: kube-rs's `DefaultBackoff` (800 ms doubling to 30 s with jitter, reset
    /// after 120 s without errors, no limit on attempts). `Some((first, max))`: a plain
    /// doubling backoff, also without a limit.
    pub backoff: Option<(Duration, Duration)>,
    /// How long a request may wait for its response (and a watch between two reads).
    /// Above the watch timeout kube-rs asks of the server (290 s), so quiet watches are
    /// not cut.
    pub read_timeout: Duration,
    /// How often an ongoing watch outage is logged again at warn (in between: debug).
    pub warn_every: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff: None,
            read_timeout: Duration::from_secs(295),
            warn_every: Duration::from_secs(60),
        }
    }
}

/// A doubling backoff without an attempt limit, for [`Tuning::backoff`].
#[derive(Debug, Clone)]
struct Doubling {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Iterator for Doubling {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        Some(d)
    }
}

impl Backoff for Doubling {
    fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Tuning {
    fn backoff(&self) -> Box<dyn Backoff> {
        match self.backoff {
            None => Box::new(watcher::DefaultBackoff::default()),
            Some((first, max)) => Box::new(Doubling {
                first,
                max,
                next: first,
            }),
        }
    }
}

/// The label selector upstream puts on Services: objects of another service proxy are
/// not ours.
pub const SERVICE_LABELS: &str = "!service.kubernetes.io/service-proxy-name";
/// Headless services have nothing to proxy; the API server drops them for us.
pub const SERVICE_FIELDS: &str = "spec.clusterIP!=None";
/// The label selector on EndpointSlices: neither headless nor another proxy's.
pub const SLICE_LABELS: &str =
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";

/// The three watched resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// core/v1 Services.
    Services,
    /// discovery.k8s.io/v1 EndpointSlices.
    EndpointSlices,
    /// This Node.
    Node,
}

impl Resource {
    #[cfg(test)]
    const ALL: [Resource; 3] = [Resource::Services, Resource::EndpointSlices, Resource::Node];

    fn index(self) -> usize {
        self as usize
    }

    /// The resource's name, for logs and the watch-error metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
            Resource::Node => "nodes",
        }
    }
}

/// One watched object after conversion: its key, and the object if kproxy uses it
/// (`None` for ignored and invalid objects, which then count as absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Where the object lives in the snapshot.
    pub key: ObjectKey,
    /// The converted object.
    pub object: Option<Object>,
}

fn object_ref(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectRef {
    ObjectRef::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Logs a bad object (its name and what is wrong, on one line; never its content); it
/// is skipped, the others are unaffected.
fn usable<T>(r: std::result::Result<T, kproxy_core::Error>) -> Option<T> {
    r.map_err(|e| tracing::warn!(error = %one_line(&e), "skipping object kproxy cannot use"))
        .ok()
}

/// A Service as an [`Item`].
pub fn service_item(svc: &core_api::Service) -> Item {
    Item {
        key: ObjectKey::Service(object_ref(&svc.metadata)),
        object: usable(convert::service(svc)).flatten().map(Object::Service),
    }
}

/// An EndpointSlice as an [`Item`].
pub fn slice_item(slice: &discovery_api::EndpointSlice) -> Item {
    Item {
        key: ObjectKey::EndpointSlice(object_ref(&slice.metadata)),
        object: usable(convert::endpoint_slice(slice))
            .flatten()
            .map(Object::EndpointSlice),
    }
}

/// A Node as an [`Item`].
pub fn node_item(node: &core_api::Node) -> Item {
    Item {
        key: ObjectKey::Node(node.metadata.name.clone().unwrap_or_default()),
        object: usable(convert::node(node)).map(Object::Node),
    }
}

/// Folds the three watch streams into core events, holding everything back until each
/// resource has been listed once (the readiness barrier), and buffering each relist until
/// it is complete, as kube-rs's reflector store does.
#[derive(Debug, Default)]
pub struct Aggregator {
    stores: [BTreeMap<ObjectKey, Object>; 3],
    buffers: [Option<BTreeMap<ObjectKey, Object>>; 3],
    listed: [bool; 3],
}

impl Aggregator {
    /// Whether every resource has finished its first list.
    pub fn ready(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    fn all_objects(&self) -> Vec<Object> {
        self.stores
            .iter()
            .flat_map(|s| s.values().cloned())
            .collect()
    }

    /// Takes one watcher event of `resource`; returns the core event to send, if any.
    pub fn handle(&mut self, resource: Resource, event: watcher::Event<Item>) -> Option<Event> {
        let i = resource.index();
        match event {
            watcher::Event::Init => {
                self.buffers[i] = Some(BTreeMap::new());
                None
            }
            watcher::Event::InitApply(item) => {
                let buffer = self.buffers[i].get_or_insert_with(BTreeMap::new);
                if let Some(obj) = item.object {
                    buffer.insert(item.key, obj);
                }
                None
            }
            watcher::Event::InitDone => {
                self.stores[i] = self.buffers[i].take().unwrap_or_default();
                self.listed[i] = true;
                self.ready().then(|| Event::Reset(self.all_objects()))
            }
            watcher::Event::Apply(item) => {
                let event = match item.object {
                    Some(obj) => {
                        self.stores[i].insert(item.key, obj.clone());
                        Event::Apply(obj)
                    }
                    // Now ignored (e.g. turned ExternalName) or invalid: gone for us.
                    None => {
                        self.stores[i].remove(&item.key);
                        Event::Delete(item.key)
                    }
                };
                self.ready().then_some(event)
            }
            watcher::Event::Delete(item) => {
                self.stores[i].remove(&item.key);
                self.ready().then_some(Event::Delete(item.key))
            }
        }
    }
}

/// Converts every object of a watcher event.
fn map_event<K>(event: watcher::Event<K>, f: impl Fn(&K) -> Item) -> watcher::Event<Item> {
    match event {
        watcher::Event::Apply(k) => watcher::Event::Apply(f(&k)),
        watcher::Event::Delete(k) => watcher::Event::Delete(f(&k)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(k) => watcher::Event::InitApply(f(&k)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

type Tagged = (
    Resource,
    std::result::Result<watcher::Event<Item>, watcher::Error>,
);

/// The three watch streams, merged, each tagged with its resource.
pub fn streams(
    client: &Client,
    node_name: &str,
    tuning: &Tuning,
) -> impl Stream<Item = Tagged> + Send + use<> {
    let services = watcher(
        Api::<core_api::Service>::all(client.clone()),
        watcher::Config::default()
            .labels(SERVICE_LABELS)
            .fields(SERVICE_FIELDS),
    )
    .backoff(tuning.backoff())
    .map(|r| (Resource::Services, r.map(|e| map_event(e, service_item))));
    let slices = watcher(
        Api::<discovery_api::EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SLICE_LABELS),
    )
    .backoff(tuning.backoff())
    .map(|r| {
        (
            Resource::EndpointSlices,
            r.map(|e| map_event(e, slice_item)),
        )
    });
    let node = watcher(
        Api::<core_api::Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
    )
    .backoff(tuning.backoff())
    .map(|r| (Resource::Node, r.map(|e| map_event(e, node_item))));
    futures::stream::select_all([services.boxed(), slices.boxed(), node.boxed()])
}

/// Called on every watch error, with the resource (for the watch-error metric).
pub type OnError = Box<dyn Fn(Resource) + Send + Sync>;

/// One resource's watch outage, for rate-limited logs.
#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    errors: u64,
    last_warn: Instant,
}

/// Logs watch errors without flooding: the first error of an outage at warn, then at
/// debug, with a warn reminder every `warn_every`; the end of an outage at info.
#[derive(Debug)]
struct ErrorLog {
    warn_every: Duration,
    outages: [Option<Outage>; 3],
}

impl ErrorLog {
    fn failed(&mut self, resource: Resource, error: &watcher::Error) {
        let now = Instant::now();
        let error = chain(error);
        let r = resource.as_str();
        match &mut self.outages[resource.index()] {
            None => {
                tracing::warn!(resource = r, %error, "watch failed, retrying");
                self.outages[resource.index()] = Some(Outage {
                    since: now,
                    errors: 1,
                    last_warn: now,
                });
            }
            Some(o) => {
                o.errors += 1;
                if now.duration_since(o.last_warn) >= self.warn_every {
                    o.last_warn = now;
                    let failing_for = now.duration_since(o.since);
                    tracing::warn!(resource = r, %error, errors = o.errors, ?failing_for,
                        "watch still failing, retrying");
                } else {
                    tracing::debug!(resource = r, %error, errors = o.errors, "watch failed, retrying");
                }
            }
        }
    }

    fn worked(&mut self, resource: Resource) {
        if let Some(o) = self.outages[resource.index()].take() {
            let failed_for = o.since.elapsed();
            tracing::info!(
                resource = resource.as_str(),
                errors = o.errors,
                ?failed_for,
                "watch works again"
            );
        }
    }
}

/// Runs the source until the receiver is dropped.
pub async fn run(
    client: Client,
    node_name: String,
    tx: mpsc::Sender<Event>,
    on_error: OnError,
    tuning: Tuning,
) {
    let mut agg = Aggregator::default();
    let mut log = ErrorLog {
        warn_every: tuning.warn_every,
        outages: [None; 3],
    };
    let mut events = std::pin::pin!(streams(&client, &node_name, &tuning));
    while let Some((resource, result)) = events.next().await {
        match result {
            Ok(event) => {
                log.worked(resource);
                if let Some(out) = agg.handle(resource, event)
                    && tx.send(out).await.is_err()
                {
                    return;
                }
            }
            // Retryable by design: the watcher relists or re-watches after the backoff.
            Err(e) => {
                log.failed(resource, &e);
                on_error(resource);
            }
        }
    }
}

/// A client from `--kubeconfig` (or in-cluster config / `$KUBECONFIG` when empty), with
/// `--master` overriding the server URL.
///
/// # Errors
/// [`Error::Kube`] when no usable configuration is found.
pub async fn client(kubeconfig: &str, master: Option<&str>, tuning: &Tuning) -> Result<Client> {
    let config = config(kubeconfig, master, tuning).await?;
    Client::try_from(config).map_err(|e| Error::Kube(e.into()))
}

/// The client config [`client`] uses.
async fn config(kubeconfig: &str, master: Option<&str>, tuning: &Tuning) -> Result<kube::Config> {
    let boxed = |e: Box<dyn std::error::Error + Send + Sync>| Error::Kube(e);
    let mut config = if kubeconfig.is_empty() {
        kube::Config::infer().await.map_err(|e| boxed(e.into()))?
    } else {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| boxed(e.into()))?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| boxed(e.into()))?
    };
    if let Some(m) = master.filter(|m| !m.is_empty()) {
        config.cluster_url = m
            .parse()
            .map_err(|e: http::uri::InvalidUri| boxed(e.into()))?;
    }
    // kube leaves the read timeout off; without one, a LIST (or a watch's first
    // response) sent to an API server that accepts but never answers waits forever and
    // the watcher never retries. Counted from the request, not from when a pooled
    // connection went idle.
    config.read_timeout = Some(tuning.read_timeout);
    config.reset_reader_on_write = true;
    Ok(config)
}

#[cfg(test)]
pub mod fake_http;
#[cfg(test)]
mod tests;
