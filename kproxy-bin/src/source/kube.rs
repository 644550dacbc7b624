//! The Kubernetes source: Services, EndpointSlices and this Node, watched with kube-rs
//! using upstream kube-proxy's informer filters (`cmd/kube-proxy/app/server.go`).
//!
//! Each watcher is a kube-rs [`watcher`] with `default_backoff()`: a `410 Gone` relists,
//! a dropped connection re-watches from the last resourceVersion, errors are logged and
//! retried. [`Aggregator`] turns the three streams into core events with one readiness
//! barrier: nothing is sent until every resource has finished its first list; then one
//! `Reset` with all objects. A later relist of any resource (`Init`…`InitDone`) sends a
//! new `Reset` of everything, so objects that vanished during a gap are dropped.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1 as core_api;
use k8s_openapi::api::discovery::v1 as discovery_api;
use kproxy_core::model::ObjectRef;
use kproxy_core::{Event, Object, ObjectKey, convert};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

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

/// Logs a bad object; it is skipped, the others are unaffected.
fn usable<T>(r: std::result::Result<T, kproxy_core::Error>) -> Option<T> {
    r.map_err(|e| tracing::warn!(error = %e, "skipping object kproxy cannot use"))
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
pub fn streams(client: &Client, node_name: &str) -> impl Stream<Item = Tagged> + Send + use<> {
    let services = watcher(
        Api::<core_api::Service>::all(client.clone()),
        watcher::Config::default()
            .labels(SERVICE_LABELS)
            .fields(SERVICE_FIELDS),
    )
    .default_backoff()
    .map(|r| (Resource::Services, r.map(|e| map_event(e, service_item))));
    let slices = watcher(
        Api::<discovery_api::EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SLICE_LABELS),
    )
    .default_backoff()
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
    .default_backoff()
    .map(|r| (Resource::Node, r.map(|e| map_event(e, node_item))));
    futures::stream::select_all([services.boxed(), slices.boxed(), node.boxed()])
}

/// Called on every watch error, with the resource (for the watch-error metric).
pub type OnError = Box<dyn Fn(Resource) + Send + Sync>;

/// Runs the source until the receiver is dropped.
pub async fn run(client: Client, node_name: String, tx: mpsc::Sender<Event>, on_error: OnError) {
    let mut agg = Aggregator::default();
    let mut events = std::pin::pin!(streams(&client, &node_name));
    while let Some((resource, result)) = events.next().await {
        match result {
            Ok(event) => {
                if let Some(out) = agg.handle(resource, event)
                    && tx.send(out).await.is_err()
                {
                    return;
                }
            }
            // Retryable by design: the watcher relists or re-watches after the backoff.
            Err(e) => {
                tracing::warn!(resource = resource.as_str(), error = %e, "watch failed, retrying");
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
pub async fn client(kubeconfig: &str, master: Option<&str>) -> Result<Client> {
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
    Client::try_from(config).map_err(|e| boxed(e.into()))
}

#[cfg(test)]
mod tests;
