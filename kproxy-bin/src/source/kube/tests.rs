//! The watch path against a fake API server: kube's own `Client` on a `tower_test` mock
//! (the technique of kube-rs's `mock_tests.rs`), answering LIST and WATCH requests per
//! resource as the test scripts them.

use std::collections::HashMap;
use std::time::Duration;

use http::{Request, Response};
use kproxy_core::model::IpFamily;
use kproxy_core::{BuildOptions, ChangeTracker};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock::SendResponse;

use super::*;

/// One request the fake received: its URI, and where to send the answer.
type Pending = (String, SendResponse<Response<Body>>);

/// Routes the client's requests to one queue per (resource, LIST or WATCH).
struct FakeApi {
    queues: HashMap<(Resource, bool), mpsc::UnboundedReceiver<Pending>>,
}

impl FakeApi {
    fn start() -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let mut senders = HashMap::new();
        let mut queues = HashMap::new();
        for r in Resource::ALL {
            for watch in [false, true] {
                let (tx, rx) = mpsc::unbounded_channel();
                senders.insert((r, watch), tx);
                queues.insert((r, watch), rx);
            }
        }
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let uri = req.uri().to_string();
                let resource = if uri.contains("/endpointslices") {
                    Resource::EndpointSlices
                } else if uri.contains("/services") {
                    Resource::Services
                } else if uri.contains("/nodes") {
                    Resource::Node
                } else {
                    panic!("unexpected request {uri}");
                };
                let _ = senders[&(resource, uri.contains("watch=true"))].send((uri, send));
            }
        });
        (client, FakeApi { queues })
    }

    /// The next request of this kind, failing the test after 10 s.
    async fn next(&mut self, resource: Resource, watch: bool) -> Pending {
        let q = self.queues.get_mut(&(resource, watch)).unwrap();
        tokio::time::timeout(Duration::from_secs(10), q.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {} request for {resource:?}",
                    if watch { "WATCH" } else { "LIST" }
                )
            })
            .unwrap()
    }

    /// Answers the next LIST of `resource` with `items` at resourceVersion `rv`.
    async fn list(&mut self, resource: Resource, rv: &str, items: Vec<Value>) -> String {
        let (uri, send) = self.next(resource, false).await;
        let body = json!({ "kind": "List", "apiVersion": "v1", "metadata": { "resourceVersion": rv }, "items": items });
        send.send_response(Response::new(Body::from(
            serde_json::to_vec(&body).unwrap(),
        )));
        uri
    }

    /// Answers the next LIST of `resource` with an API error status.
    async fn fail_list(&mut self, resource: Resource, code: u16, reason: &str) {
        let (_, send) = self.next(resource, false).await;
        let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": format!("{reason} for test"), "reason": reason, "code": code });
        let mut resp = Response::new(Body::from(serde_json::to_vec(&body).unwrap()));
        *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
        send.send_response(resp);
    }

    /// Answers the next WATCH of `resource` with these events, then ends the response
    /// (a dropped connection, after which the watcher re-watches).
    async fn watch(&mut self, resource: Resource, events: Vec<Value>) -> String {
        let (uri, send) = self.next(resource, true).await;
        let mut body = Vec::new();
        for e in events {
            body.extend(serde_json::to_vec(&e).unwrap());
            body.push(b'\n');
        }
        send.send_response(Response::new(Body::from(body)));
        uri
    }
}

fn service(name: &str, ip: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "default", "resourceVersion": rv },
        "spec": { "clusterIP": ip, "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }] }
    })
}

fn slice(service: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": format!("{service}-x"), "namespace": "default",
                      "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        "endpoints": [{ "addresses": [ip], "conditions": { "ready": true }, "nodeName": "n1" }]
    })
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": "n1", "labels": { "topology.kubernetes.io/zone": "z1" } },
        "status": { "addresses": [{ "type": "InternalIP", "address": "10.0.0.1" }] }
    })
}

fn watch_event(kind: &str, object: Value) -> Value {
    json!({ "type": kind, "object": object })
}

fn gone() -> Value {
    watch_event(
        "ERROR",
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version: 10 (30)", "reason": "Expired", "code": 410 }),
    )
}

async fn recv(rx: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no event from the source")
        .unwrap()
}

fn service_names(tracker: &ChangeTracker) -> Vec<String> {
    tracker
        .map()
        .family(IpFamily::V4)
        .keys()
        .map(|k| k.service.name.clone())
        .collect()
}

#[tokio::test]
async fn waits_for_every_initial_list_then_follows_watches_and_relists_on_410() {
    let (client, mut api) = FakeApi::start();
    let (tx, mut rx) = mpsc::channel(16);
    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = errors.clone();
    let on_error: OnError = Box::new(move |_| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    tokio::spawn(run(client, "n1".into(), tx, on_error, Tuning::default()));

    // The filters upstream uses, pushed to the server.
    let uri = api
        .list(
            Resource::Services,
            "10",
            vec![service("a", "10.96.0.1", "9")],
        )
        .await;
    assert!(
        uri.contains("labelSelector=%21service.kubernetes.io%2Fservice-proxy-name"),
        "{uri}"
    );
    assert!(
        uri.contains("fieldSelector=spec.clusterIP%21%3DNone"),
        "{uri}"
    );
    let uri = api.list(Resource::Node, "11", vec![node()]).await;
    assert!(uri.contains("fieldSelector=metadata.name%3Dn1"), "{uri}");
    // Services and the Node are listed, the slices are not: nothing may be sent yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "event before all lists"
    );
    let uri = api
        .list(
            Resource::EndpointSlices,
            "12",
            vec![slice("a", "10.244.0.5")],
        )
        .await;
    assert!(uri.contains("%21service.kubernetes.io%2Fheadless"), "{uri}");

    let mut tracker = ChangeTracker::new(BuildOptions::for_node("n1"));
    let first = recv(&mut rx).await;
    let Event::Reset(objects) = &first else {
        panic!("first event is not a reset: {first:?}")
    };
    assert_eq!(objects.len(), 3);
    tracker.apply(first);
    tracker.commit();
    let port = tracker.map().family(IpFamily::V4).values().next().unwrap();
    assert_eq!(port.selection.cluster, ["10.244.0.5:8080".parse().unwrap()]);
    assert!(port.endpoints[0].is_local);

    // A watch event, then a bookmark, then the connection drops: the watcher resumes
    // from the last resourceVersion without relisting.
    let uri = api
        .watch(
            Resource::Services,
            vec![
                watch_event("ADDED", service("b", "10.96.0.2", "13")),
                watch_event("BOOKMARK", json!({ "kind": "Service", "apiVersion": "v1", "metadata": { "resourceVersion": "14" } })),
            ],
        )
        .await;
    assert!(uri.contains("resourceVersion=10"), "{uri}");
    let ev = recv(&mut rx).await;
    assert!(
        matches!(&ev, Event::Apply(Object::Service(s)) if s.id.name == "b"),
        "{ev:?}"
    );
    tracker.apply(ev);
    tracker.commit();
    assert_eq!(service_names(&tracker), ["a", "b"]);

    // The re-watch starts at the bookmark; the server answers 410 Gone, so the watcher
    // relists: `a` was deleted meanwhile and must go without any Delete event.
    let uri = api.watch(Resource::Services, vec![gone()]).await;
    assert!(uri.contains("resourceVersion=14"), "{uri}");
    api.list(
        Resource::Services,
        "30",
        vec![service("b", "10.96.0.2", "13")],
    )
    .await;
    let ev = recv(&mut rx).await;
    assert!(matches!(&ev, Event::Reset(o) if o.len() == 3), "{ev:?}");
    tracker.apply(ev);
    tracker.commit();
    assert_eq!(service_names(&tracker), ["b"]);
    assert_eq!(
        errors.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the 410 is reported once"
    );
}

#[test]
fn aggregator_buffers_a_relist_and_drops_objects_it_did_not_see_again() {
    let svc = |name: &str| {
        let v = service(name, "10.96.0.9", "1");
        service_item(&serde_json::from_value(v).unwrap())
    };
    let mut agg = Aggregator::default();
    for r in [Resource::Services, Resource::EndpointSlices] {
        assert_eq!(agg.handle(r, watcher::Event::Init), None);
    }
    assert_eq!(
        agg.handle(Resource::Services, watcher::Event::InitApply(svc("a"))),
        None
    );
    assert_eq!(
        agg.handle(Resource::Services, watcher::Event::InitDone),
        None
    );
    assert_eq!(
        agg.handle(Resource::EndpointSlices, watcher::Event::InitDone),
        None
    );
    // Changes before the Node list completes are kept, not sent.
    assert_eq!(
        agg.handle(Resource::Services, watcher::Event::Apply(svc("b"))),
        None
    );
    assert!(!agg.ready());
    assert_eq!(agg.handle(Resource::Node, watcher::Event::Init), None);
    let Some(Event::Reset(all)) = agg.handle(Resource::Node, watcher::Event::InitDone) else {
        panic!()
    };
    assert_eq!(all.len(), 2);
    // A relist of services that no longer has `a`; nothing is sent until it is complete.
    assert_eq!(agg.handle(Resource::Services, watcher::Event::Init), None);
    assert_eq!(
        agg.handle(Resource::Services, watcher::Event::InitApply(svc("b"))),
        None
    );
    let Some(Event::Reset(all)) = agg.handle(Resource::Services, watcher::Event::InitDone) else {
        panic!()
    };
    assert_eq!(all.len(), 1);
    assert!(matches!(&all[0], Object::Service(s) if s.id.name == "b"));
}

#[test]
fn a_service_that_becomes_external_name_is_deleted() {
    let mut agg = Aggregator::default();
    for r in Resource::ALL {
        agg.handle(r, watcher::Event::InitDone);
    }
    let svc: core_api::Service = serde_json::from_value(json!({
        "metadata": { "name": "a", "namespace": "default" },
        "spec": { "type": "ExternalName", "externalName": "example.com" }
    }))
    .unwrap();
    let ev = agg.handle(
        Resource::Services,
        watcher::Event::Apply(service_item(&svc)),
    );
    assert_eq!(
        ev,
        Some(Event::Delete(ObjectKey::Service(ObjectRef::new(
            "default", "a"
        ))))
    );
}

#[tokio::test]
async fn a_forbidden_list_is_reported_and_retried_and_holds_back_the_first_sync() {
    let (client, mut api) = FakeApi::start();
    let (tx, mut rx) = mpsc::channel(16);
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = errors.clone();
    let on_error: OnError = Box::new(move |r| seen.lock().unwrap().push(r));
    tokio::spawn(run(client, "n1".into(), tx, on_error, Tuning::default()));
    api.list(
        Resource::Services,
        "10",
        vec![service("a", "10.96.0.1", "9")],
    )
    .await;
    api.list(Resource::Node, "11", vec![node()]).await;
    // RBAC not granted yet: the slice list fails; the watcher backs off and lists again.
    api.fail_list(Resource::EndpointSlices, 403, "Forbidden")
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "synced without slices"
    );
    api.list(
        Resource::EndpointSlices,
        "12",
        vec![slice("a", "10.244.0.5")],
    )
    .await;
    let ev = recv(&mut rx).await;
    assert!(matches!(&ev, Event::Reset(o) if o.len() == 3), "{ev:?}");
    assert_eq!(*errors.lock().unwrap(), [Resource::EndpointSlices]);
}
