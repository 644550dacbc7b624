//! # kproxy-ipvs
//!
//! kproxy's IPVS backend, a reimplementation of kube-proxy's `--proxy-mode=ipvs`
//! (`pkg/proxy/ipvs` upstream).
//!
//! Where to start:
//! - [`netlink`]: a codec for the kernel's `IPVS` generic netlink family
//!   (include/uapi/linux/ip_vs.h), tested against bytes captured from `ipvsadm`;
//! - [`handle::IpvsHandle`]: an async client over it, behind the [`handle::IpvsOps`] trait,
//!   with a pipelined socket for bulk writes ([`handle::pipeline`]);
//! - [`plan::plan`]: pure, deterministic desired state (virtual servers, kube-ipvs0
//!   addresses, ipsets, companion iptables rules) from a [`kproxy_core::ServiceMap`];
//!   [`plan::render_plan`] prints it for `kproxy plan --proxy-mode ipvs`;
//! - [`reconcile::diff`]: ordered operations from what the kernel has to what the plan
//!   wants, with graceful termination;
//! - [`proxier::IpvsProxier`]: the [`kproxy_core::Proxier`] gluing it together through
//!   an [`exec::Executor`], with [`plan::IncrementalPlan`] for partial syncs and
//!   [`proxier::Metrics`] for failures (fault tests in `src/proxier/fault_tests.rs`).
//!
//! Tests: `cargo test -p kproxy-ipvs` runs the pure ones (golden bytes captured from
//! ipvsadm in the VM, property tests, the proxier against `exec::FakeIpvs` and
//! `exec::RecordingExecutor` with feature `testing` or in unit tests). The kernel tests
//! (`tests/kernel_ipvs.rs`) need IPVS, which only the QEMU guest of
//! `shared/tools/ipvs-vm` has; `kproxy-ipvs/run-kernel-tests.sh` builds them on the host
//! and runs them there. On the host they return at once. `kproxy-ipvs/run-benchmark.sh`
//! times 10,000 services × 10 endpoints against `ipvsadm -R` in the same guest.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod exec;
pub mod handle;
pub mod netlink;
pub mod plan;
pub mod proxier;
pub mod reconcile;

pub use error::{Error, Result};
pub use plan::render_plan;
pub use proxier::IpvsProxier;
