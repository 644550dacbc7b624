//! # kproxy-fuzz
//!
//! The logic of kproxy's fuzz targets, one `pub fn <target>(data: &[u8])` per parser or
//! builder, each panicking when an invariant breaks. Three drivers call the same
//! functions:
//! - libFuzzer: every `fuzz_targets/<target>.rs` is a one-line `fuzz_target!` calling
//!   its function (`cargo +nightly fuzz run --features libfuzzer <target>`);
//! - `tests/replay.rs` feeds every file of `corpus/<target>/` and
//!   `regressions/<target>/` to it on stable (`cargo test --manifest-path
//!   fuzz/Cargo.toml`), which is how CI replays the corpora;
//! - `tests/mutate.rs` runs a bounded, seeded random-mutation loop ([`mutate`]) over
//!   the corpora: a stable stand-in for coverage-guided fuzzing.
//!
//! [`TARGETS`] lists them all; the tests check that it agrees with `Cargo.toml`,
//! `fuzz_targets/` and `corpus/`. Every target takes raw bytes, even the structured
//! ones ([`map_build`], [`k8s_objects`], [`iptables_plan`] and [`ipvs_plan`] read them
//! through [`arbitrary`]), so a corpus
//! file means the same thing to every driver.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod check;
mod cluster;
mod config_parse;
mod iptables_plan;
mod ipvs_decode;
mod ipvs_plan;
mod k8s_objects;
mod map_build;
pub mod mutate;
mod snapshot_parse;

pub use config_parse::config_parse;
pub use iptables_plan::iptables_plan;
pub use ipvs_decode::ipvs_decode;
pub use ipvs_plan::ipvs_plan;
pub use k8s_objects::k8s_objects;
pub use map_build::map_build;
pub use snapshot_parse::snapshot_parse;

/// One fuzz target: the `[[bin]]` name (also its folder under `corpus/` and
/// `regressions/`) and the function libFuzzer and the tests call.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// Its logic: panics when an invariant does not hold for `data`.
    pub run: fn(&[u8]),
}

/// Every fuzz target, in the order the tests run them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "config_parse",
        run: config_parse,
    },
    Target {
        name: "snapshot_parse",
        run: snapshot_parse,
    },
    Target {
        name: "map_build",
        run: map_build,
    },
    Target {
        name: "k8s_objects",
        run: k8s_objects,
    },
    Target {
        name: "ipvs_decode",
        run: ipvs_decode,
    },
    Target {
        name: "iptables_plan",
        run: iptables_plan,
    },
    Target {
        name: "ipvs_plan",
        run: ipvs_plan,
    },
];

/// Text for the parsers: invalid UTF-8 is replaced rather than skipped, so that byte
/// mutations of a text seed still reach the parser.
pub(crate) fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}
