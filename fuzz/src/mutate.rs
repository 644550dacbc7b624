//! A small random-mutation fuzzer for stable Rust: no coverage feedback, but seeded and
//! bounded, so it runs in `cargo test` and finds the same things every time.
//!
//! Each round takes a seed from the corpus and applies one to four of libFuzzer's
//! simpler mutations (bit flips, interesting bytes, erasing, duplicating and inserting
//! ranges, splicing in another seed, inserting a dictionary token).

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Tokens worth inserting: YAML/JSON punctuation and the words the parsers look for.
pub const DICTIONARY: &[&str] = &[
    "\n---\n",
    "\n- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    "null",
    "true",
    "&a ",
    "*a",
    "!!str ",
    "kind: List\nitems:\n",
    "kind: Service",
    "kind: EndpointSlice",
    "kind: Endpoints",
    "kind: Node",
    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n",
    "metadata: {name: a, namespace: b}",
    "clusterIP",
    "clusterIPs",
    "ports",
    "port: ",
    "protocol: ",
    "addressType: IPv6",
    "endpoints",
    "addresses",
    "conditions",
    "nodeName",
    "hints",
    "subsets",
    "mode: ipvs",
    "mode: nftables",
    "clusterCIDR: ",
    "masqueradeBit",
    "syncPeriod: ",
    "1h2m3.5s",
    "-1s",
    "65536",
    "-1",
    "2147483648",
    "1e999",
    "0x1F",
    "::ffff:10.0.0.1",
    "10.0.0.0/33",
    "fe80::1%eth0",
];

/// A xorshift64* generator: tiny, deterministic, good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One mutated copy of `seeds[pick]`, at most `max_len` bytes long.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                const INTERESTING: &[u8] = b"\0\x7f\x80\xff\n\t \":-#'{}[],&*!|>%\\";
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                data.drain(start..end);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let chunk = data[start..end].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                data.splice(at..at, bytes);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(256)).min(other.len());
                    let at = rng.below(len + 1);
                    data.splice(at..at, other[start..end].iter().copied());
                }
            }
            6 if len > 0 => {
                data.truncate(rng.below(len));
            }
            _ => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                let at = rng.below(len + 1);
                data.splice(at..at, token.iter().copied());
            }
        }
    }
    data.truncate(max_len);
    data
}

/// What a [`run`] did.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Inputs executed (mutants, plus the seeds themselves first).
    pub executions: usize,
    /// Wall-clock time they took.
    pub elapsed: Duration,
}

/// A panic of a target on one input, with the input, to save as a regression file.
#[derive(Debug)]
pub struct Crash {
    /// The input that made the target panic.
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
}

/// Runs `target` on every seed, then on `iterations` mutants of them from an `Rng` with
/// `rng_seed`. Returns the first input that panics.
///
/// # Errors
/// The first [`Crash`].
pub fn run(
    target: fn(&[u8]),
    seeds: &[Vec<u8>],
    iterations: usize,
    rng_seed: u64,
) -> Result<Stats, Box<Crash>> {
    let start = Instant::now();
    let mut rng = Rng::new(rng_seed);
    let max_len = seeds.iter().map(Vec::len).max().unwrap_or(0).max(64) * 2;
    let inputs = seeds
        .iter()
        .cloned()
        .chain((0..iterations).map(|_| mutate(&mut rng, seeds, max_len)));
    let mut executions = 0;
    for input in inputs {
        executions += 1;
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| target(&input))) {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(non-string panic)".to_owned());
            return Err(Box::new(Crash { input, message }));
        }
    }
    Ok(Stats {
        executions,
        elapsed: start.elapsed(),
    })
}
