//! A [`Snapshot`]: the converted Services, EndpointSlices and Nodes kproxy knows about,
//! and the parsing of Kubernetes YAML/JSON documents into one.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as core_api;
use k8s_openapi::api::discovery::v1 as discovery_api;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;
use crate::convert;
use crate::model::{EndpointSlice, Node, ObjectKind, ObjectRef, Service};

/// One converted object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A Service.
    Service(Service),
    /// An EndpointSlice (or a converted legacy Endpoints subset).
    EndpointSlice(EndpointSlice),
    /// A Node.
    Node(Node),
}

impl Object {
    /// The key the object is stored under.
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Service(s) => ObjectKey::Service(s.id.clone()),
            Object::EndpointSlice(s) => ObjectKey::EndpointSlice(s.id.clone()),
            Object::Node(n) => ObjectKey::Node(n.name.clone()),
        }
    }
}

/// How an object is identified in a [`Snapshot`], for deletes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    /// A Service by namespace/name.
    Service(ObjectRef),
    /// An EndpointSlice by namespace/name.
    EndpointSlice(ObjectRef),
    /// A Node by name.
    Node(String),
}

/// The objects kproxy currently knows, keyed for fast lookup, with slices indexed by
/// the Service they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    services: BTreeMap<ObjectRef, Service>,
    slices: BTreeMap<ObjectRef, EndpointSlice>,
    slices_by_service: BTreeMap<ObjectRef, BTreeSet<ObjectRef>>,
    nodes: BTreeMap<String, Node>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Snapshot::default()
    }

    /// Adds or replaces an object; returns the one it replaced.
    pub fn apply(&mut self, obj: Object) -> Option<Object> {
        match obj {
            Object::Service(s) => self.services.insert(s.id.clone(), s).map(Object::Service),
            Object::Node(n) => self.nodes.insert(n.name.clone(), n).map(Object::Node),
            Object::EndpointSlice(s) => {
                let old = self.remove_slice(&s.id);
                self.slices_by_service
                    .entry(s.service.clone())
                    .or_default()
                    .insert(s.id.clone());
                self.slices.insert(s.id.clone(), s);
                old.map(Object::EndpointSlice)
            }
        }
    }

    /// Removes an object; returns it if it was there.
    pub fn delete(&mut self, key: &ObjectKey) -> Option<Object> {
        match key {
            ObjectKey::Service(id) => self.services.remove(id).map(Object::Service),
            ObjectKey::EndpointSlice(id) => self.remove_slice(id).map(Object::EndpointSlice),
            ObjectKey::Node(name) => self.nodes.remove(name).map(Object::Node),
        }
    }

    fn remove_slice(&mut self, id: &ObjectRef) -> Option<EndpointSlice> {
        let old = self.slices.remove(id)?;
        if let Some(set) = self.slices_by_service.get_mut(&old.service) {
            set.remove(id);
            if set.is_empty() {
                self.slices_by_service.remove(&old.service);
            }
        }
        Some(old)
    }

    /// Every Service, in namespace/name order.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// One Service.
    pub fn service(&self, id: &ObjectRef) -> Option<&Service> {
        self.services.get(id)
    }

    /// Every EndpointSlice, in namespace/name order.
    pub fn slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.slices.values()
    }

    /// One EndpointSlice.
    pub fn slice(&self, id: &ObjectRef) -> Option<&EndpointSlice> {
        self.slices.get(id)
    }

    /// The slices that belong to `service` (label `kubernetes.io/service-name`).
    pub fn slices_of<'a>(
        &'a self,
        service: &ObjectRef,
    ) -> impl Iterator<Item = &'a EndpointSlice> + Clone + 'a {
        self.slices_by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|id| self.slices.get(id))
    }

    /// Every Node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// One Node.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Parses Kubernetes objects from YAML (one or many `---`-separated documents) or
    /// JSON, each a Service, EndpointSlice, Endpoints, Node, or a `kind: List` of them
    /// (what `kubectl get svc,endpointslices,nodes -A -o yaml` prints). Other kinds are
    /// skipped. Returns the snapshot and one error per object that could not be used;
    /// fails only when the text is not YAML/JSON at all.
    pub fn from_documents(text: &str) -> Result<(Snapshot, Vec<Error>), Error> {
        let mut snap = Snapshot::new();
        let problems = snap.add_documents(text)?;
        Ok((snap, problems))
    }

    /// Like [`Snapshot::from_documents`], adding to this snapshot.
    pub fn add_documents(&mut self, text: &str) -> Result<Vec<Error>, Error> {
        let docs = parse_documents(text)?;
        let mut problems = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            match objects_from_value(i + 1, doc) {
                Ok((objects, mut errs)) => {
                    problems.append(&mut errs);
                    for o in objects {
                        self.apply(o);
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        Ok(problems)
    }
}

/// Splits YAML/JSON text into its documents (empty documents dropped).
pub fn parse_documents(text: &str) -> Result<Vec<Value>, Error> {
    let trimmed = text.trim_start();
    let docs: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::InvalidDocument {
            index: 1,
            reason: e.to_string(),
        })?;
        match v {
            Value::Array(items) => items,
            v => vec![v],
        }
    } else {
        serde_saphyr::from_multiple::<Value>(text).map_err(|e| Error::InvalidDocument {
            index: 1,
            reason: first_line(&e.to_string()),
        })?
    };
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}

/// Converts one document (an object or a List) into kproxy objects. Ignored objects
/// (ExternalName, headless, FQDN slices, other kinds) yield nothing; bad objects yield
/// errors naming them.
pub fn objects_from_value(index: usize, doc: Value) -> Result<(Vec<Object>, Vec<Error>), Error> {
    let Some(kind) = doc.get("kind").and_then(Value::as_str).map(str::to_owned) else {
        return Err(Error::InvalidDocument {
            index,
            reason: "not a Kubernetes object (no kind)".into(),
        });
    };
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let mut push = |r: Result<Vec<Object>, Error>| match r {
        Ok(mut o) => objects.append(&mut o),
        Err(e) => errors.push(e),
    };
    match kind.as_str() {
        "List" | "ServiceList" | "EndpointSliceList" | "EndpointsList" | "NodeList" => {
            let items = match doc {
                Value::Object(mut m) => m.remove("items").unwrap_or(Value::Null),
                _ => Value::Null,
            };
            let default_kind = kind
                .strip_suffix("List")
                .filter(|k| !k.is_empty())
                .map(str::to_owned);
            for item in items.as_array().into_iter().flatten() {
                let mut item = item.clone();
                if let (Some(k), Value::Object(m)) = (&default_kind, &mut item) {
                    m.entry("kind").or_insert_with(|| Value::String(k.clone()));
                }
                match objects_from_value(index, item) {
                    Ok((mut o, mut e)) => {
                        objects.append(&mut o);
                        errors.append(&mut e);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        "Service" => push(
            typed::<core_api::Service>(ObjectKind::Service, doc)
                .and_then(|s| convert::service(&s))
                .map(|s| s.map(Object::Service).into_iter().collect()),
        ),
        "EndpointSlice" => push(
            typed::<discovery_api::EndpointSlice>(ObjectKind::EndpointSlice, doc)
                .and_then(|s| convert::endpoint_slice(&s))
                .map(|s| s.map(Object::EndpointSlice).into_iter().collect()),
        ),
        "Endpoints" => push(
            typed::<core_api::Endpoints>(ObjectKind::Endpoints, doc)
                .and_then(|e| convert::endpoints(&e))
                .map(|v| v.into_iter().map(Object::EndpointSlice).collect()),
        ),
        "Node" => push(
            typed::<core_api::Node>(ObjectKind::Node, doc)
                .and_then(|n| convert::node(&n))
                .map(|n| vec![Object::Node(n)]),
        ),
        _ => {}
    }
    Ok((objects, errors))
}

/// Decodes a document into its API type; a shape error names the object.
fn typed<T: DeserializeOwned>(kind: ObjectKind, doc: Value) -> Result<T, Error> {
    let meta = doc.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let obj = ObjectRef::new(field("namespace"), field("name"));
    serde_json::from_value(doc).map_err(|e| Error::InvalidObject {
        kind,
        obj,
        field: "(object)".into(),
        reason: e.to_string(),
    })
}
