//! Event sources: where the objects come from.
//!
//! Every source sends core [`Event`](kproxy_core::Event)s into one channel. The contract
//! the runner relies on (kube-rs's `Init`/`InitDone` buffering, as its reflector store
//! does): a source sends nothing until it has a complete view, then an
//! [`Event::Reset`](kproxy_core::Event::Reset) with every object; after that, `Apply` and
//! `Delete` events, and another `Reset` whenever it relists. So the first `Reset` is the
//! readiness barrier: the runner never syncs before it.
//!
//! - [`file`]: `--from FILE|DIR`, reloaded when the files change;
//! - [`kube`]: Services, EndpointSlices and this Node watched on the API server.

pub mod file;
pub mod kube;

use kproxy_core::{Event, Object, Snapshot};

/// Every object of a snapshot, as a `Reset` event.
pub fn reset_of(snapshot: &Snapshot) -> Event {
    let objects: Vec<Object> = snapshot
        .services()
        .cloned()
        .map(Object::Service)
        .chain(snapshot.slices().cloned().map(Object::EndpointSlice))
        .chain(snapshot.nodes().cloned().map(Object::Node))
        .collect();
    Event::Reset(objects)
}
