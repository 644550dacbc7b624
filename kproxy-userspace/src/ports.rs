//! Proxy port allocation from `portRange` (upstream `pkg/proxy/userspace/port_allocator.go`).
//!
//! With an empty range every proxy socket binds port 0 and the kernel picks. With a
//! range, each pick starts at a random offset and scans upwards, skipping ports in use;
//! released ports can be picked again. Upstream's background filler and its 1 s wait are
//! not needed here: picks are synchronous, and a full range fails at once.

use std::collections::BTreeSet;

use crate::balance::SplitMix64;
use crate::error::{Error, Result};

/// An inclusive range of ports, `base..=base + size - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// The first port.
    pub base: u16,
    /// Number of ports (at least 1).
    pub size: u32,
}

impl PortRange {
    /// Parses `portRange` as upstream's `ParsePortRange`: empty (no range), `port`,
    /// `base-max` or `base+offset`. A range of only port 0 also means "no range".
    ///
    /// # Errors
    /// [`Error::BadPortRange`] for anything else.
    pub fn parse(value: &str) -> Result<Option<PortRange>> {
        let v = value.trim();
        let bad = |reason: &str| Error::BadPortRange {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if v.is_empty() {
            return Ok(None);
        }
        let num = |s: &str| s.trim().parse::<u32>().map_err(|_| bad("not a number"));
        let (low, high) = if let Some((a, b)) = v.split_once('-') {
            (num(a)?, num(b)?)
        } else if let Some((a, b)) = v.split_once('+') {
            let a = num(a)?;
            (a, a.saturating_add(num(b)?))
        } else {
            let p = num(v)?;
            (p, p)
        };
        if high > 65535 {
            return Err(bad("the port range cannot be greater than 65535"));
        }
        if high < low {
            return Err(bad("end port cannot be less than start port"));
        }
        if high == 0 {
            return Ok(None);
        }
        let base = u16::try_from(low.max(1)).map_err(|_| bad("out of range"))?;
        Ok(Some(PortRange {
            base,
            size: high - u32::from(base) + 1,
        }))
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        u32::from(port) >= u32::from(self.base)
            && u32::from(port) < u32::from(self.base) + self.size
    }

    fn nth(&self, i: u32) -> u16 {
        // i < size and base + size - 1 <= 65535 (checked in parse).
        u16::try_from(u32::from(self.base) + i).unwrap_or(u16::MAX)
    }
}

/// Hands out ports of a [`PortRange`]; without a range every pick is port 0.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    range: Option<PortRange>,
    used: BTreeSet<u16>,
    rng: SplitMix64,
}

impl PortAllocator {
    /// An allocator over `range`; `seed` picks the random starting offsets.
    pub fn new(range: Option<PortRange>, seed: u64) -> Self {
        PortAllocator {
            range,
            used: BTreeSet::new(),
            rng: SplitMix64::new(seed),
        }
    }

    /// The range, if one is configured.
    pub fn range(&self) -> Option<PortRange> {
        self.range
    }

    /// The next free port (0 without a range: the kernel chooses).
    ///
    /// # Errors
    /// [`Error::PortsExhausted`] when every port of the range is taken.
    pub fn allocate(&mut self) -> Result<u16> {
        let Some(r) = self.range else { return Ok(0) };
        let start = self.rng.below(r.size as usize) as u32;
        for i in 0..r.size {
            let p = r.nth((start + i) % r.size);
            if self.used.insert(p) {
                return Ok(p);
            }
        }
        Err(Error::PortsExhausted)
    }

    /// Marks `port` taken (a bind found it busy, or it was picked elsewhere).
    pub fn mark_used(&mut self, port: u16) {
        if self.range.is_some_and(|r| r.contains(port)) {
            self.used.insert(port);
        }
    }

    /// Gives `port` back.
    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_in_all_notations() {
        assert_eq!(PortRange::parse("").unwrap(), None);
        assert_eq!(PortRange::parse("0-0").unwrap(), None);
        assert_eq!(
            PortRange::parse("30000-30009").unwrap(),
            Some(PortRange {
                base: 30000,
                size: 10
            })
        );
        assert_eq!(
            PortRange::parse("30000+9").unwrap(),
            Some(PortRange {
                base: 30000,
                size: 10
            })
        );
        assert_eq!(
            PortRange::parse("5000").unwrap(),
            Some(PortRange {
                base: 5000,
                size: 1
            })
        );
        assert!(PortRange::parse("10-5").is_err());
        assert!(PortRange::parse("1-70000").is_err());
        assert!(PortRange::parse("x").is_err());
    }

    #[test]
    fn allocation_covers_the_range_then_fails_and_reuses_released_ports() {
        let mut a = PortAllocator::new(PortRange::parse("100-104").unwrap(), 3);
        let mut got: Vec<u16> = (0..5).map(|_| a.allocate().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![100, 101, 102, 103, 104]);
        let err = a.allocate().unwrap_err();
        assert!(err.to_string().starts_with("port allocation failed"));
        a.release(102);
        assert_eq!(a.allocate().unwrap(), 102);
    }

    #[test]
    fn without_a_range_the_kernel_picks() {
        let mut a = PortAllocator::new(None, 1);
        assert_eq!(a.allocate().unwrap(), 0);
        assert_eq!(a.allocate().unwrap(), 0);
    }
}
