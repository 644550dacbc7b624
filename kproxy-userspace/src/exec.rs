//! The side effects on iptables go through the iptables mode's executor
//! (`kproxy_iptables::exec`): one `iptables-restore --noflush` per family and sync, and
//! `iptables-save` to see which jumps exist. Re-exported here so the binary can build a
//! [`UserspaceProxier`](crate::UserspaceProxier) without naming the other crate.

pub use kproxy_iptables::exec::{Backend, Executor, RealExecutor, RestoreFlags};
pub use kproxy_iptables::plan::Table;

/// How the userspace mode restores: `--noflush` (other chains stay), no `--counters`
/// (the input carries none).
pub const FLAGS: RestoreFlags = RestoreFlags {
    noflush: true,
    counters: false,
};
