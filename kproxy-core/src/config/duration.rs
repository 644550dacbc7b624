//! Go `time.Duration` values as they appear in the config (`metav1.Duration`): text such as
//! `30s`, `1m30s` or `1h0m0s`, kept as signed nanoseconds so that a negative value can be
//! parsed and then reported by validation.
//!
//! Parsing follows Go's `time.ParseDuration` and printing follows `time.Duration.String`
//! (`src/time/format.go` in the Go tree), including their limits: the value is an `i64`
//! count of nanoseconds, and the units are `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m` and `h`.

use std::fmt;
use std::str::FromStr;

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;
/// `1 << 63`: one more than `i64::MAX`, the magnitude of `i64::MIN`.
const ONE_SHL_63: u64 = 1 << 63;

/// A signed span of time with nanosecond precision, read and written as a Go duration
/// string (`"30s"`, `"1m30s"`, `"250ms"`, `"-1s"`).
///
/// kube-proxy's config uses `metav1.Duration`, a Go `time.Duration` (an `i64` of
/// nanoseconds). Negative values parse, so that [`validate`](super::KubeProxyConfiguration::validate)
/// can reject them naming the field, as upstream does.
///
/// ```
/// use kproxy_core::config::Duration;
///
/// let d: Duration = "1m30s".parse().unwrap();
/// assert_eq!(d.to_std(), std::time::Duration::from_secs(90));
/// assert_eq!(Duration::from_secs(3600).to_string(), "1h0m0s");
/// assert!("-1s".parse::<Duration>().unwrap().is_negative());
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    nanos: i64,
}

impl Duration {
    /// The zero duration, printed as `0s`.
    pub const ZERO: Duration = Duration { nanos: 0 };

    /// A duration of `nanos` nanoseconds (may be negative).
    #[must_use]
    pub const fn from_nanos(nanos: i64) -> Self {
        Duration { nanos }
    }

    /// A duration of `millis` milliseconds, saturating at the `i64` nanosecond range.
    #[must_use]
    pub const fn from_millis(millis: i64) -> Self {
        Duration {
            nanos: millis.saturating_mul(NANOS_PER_MILLI as i64),
        }
    }

    /// A duration of `secs` seconds, saturating at the `i64` nanosecond range.
    #[must_use]
    pub const fn from_secs(secs: i64) -> Self {
        Duration {
            nanos: secs.saturating_mul(NANOS_PER_SEC as i64),
        }
    }

    /// A duration of `mins` minutes, saturating at the `i64` nanosecond range.
    #[must_use]
    pub const fn from_mins(mins: i64) -> Self {
        Duration::from_secs(mins.saturating_mul(60))
    }

    /// A duration of `hours` hours, saturating at the `i64` nanosecond range.
    #[must_use]
    pub const fn from_hours(hours: i64) -> Self {
        Duration::from_secs(hours.saturating_mul(3600))
    }

    /// The value in nanoseconds, negative for a negative duration.
    #[must_use]
    pub const fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// True if the duration is below zero.
    #[must_use]
    pub const fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// True if the duration is exactly zero.
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// The duration as a `std::time::Duration`; a negative duration becomes zero.
    #[must_use]
    pub const fn to_std(self) -> std::time::Duration {
        if self.nanos <= 0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_nanos(self.nanos as u64)
        }
    }

    /// Converts a `std::time::Duration`, saturating at `i64::MAX` nanoseconds (about 292
    /// years), Go's limit.
    #[must_use]
    pub fn from_std(d: std::time::Duration) -> Self {
        Duration {
            nanos: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration::from_std(d)
    }
}

/// Why a string is not a Go duration. The message follows Go's `time.ParseDuration`
/// errors, without their `time: ` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDurationError {
    message: String,
}

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseDurationError {}

fn invalid(orig: &str) -> ParseDurationError {
    ParseDurationError {
        message: format!("invalid duration {orig:?}"),
    }
}

/// Consumes leading ASCII digits; `None` on overflow past `1 << 63` (Go's `leadingInt`).
fn leading_int(s: &str) -> Option<(u64, &str)> {
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    let mut x: u64 = 0;
    for c in s[..end].bytes() {
        if x > ONE_SHL_63 / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > ONE_SHL_63 {
            return None;
        }
    }
    Some((x, &s[end..]))
}

/// Consumes the digits after a `.`; digits past the precision of a `u64` are skipped
/// (Go's `leadingFraction`). Returns the value, its scale (10^digits) and the rest.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    let mut x: u64 = 0;
    let mut scale = 1.0_f64;
    let mut overflow = false;
    for c in s[..end].bytes() {
        if overflow {
            continue;
        }
        if x > (ONE_SHL_63 - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > ONE_SHL_63 {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[end..])
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        _ => return None,
    })
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    /// Parses `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or a bare `0`, like Go's `time.ParseDuration`.
    fn from_str(orig: &str) -> Result<Self, Self::Err> {
        let mut s = orig;
        let mut neg = false;
        if let Some(rest) = s.strip_prefix('-') {
            neg = true;
            s = rest;
        } else if let Some(rest) = s.strip_prefix('+') {
            s = rest;
        }
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        if s.is_empty() {
            return Err(invalid(orig));
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            let first = s.as_bytes()[0];
            if !(first == b'.' || first.is_ascii_digit()) {
                return Err(invalid(orig));
            }
            let before = s.len();
            let (mut v, rest) = leading_int(s).ok_or_else(|| invalid(orig))?;
            s = rest;
            let pre = before != s.len();
            let (mut frac, mut scale, mut post) = (0, 1.0, false);
            if let Some(rest) = s.strip_prefix('.') {
                let before = rest.len();
                (frac, scale, s) = leading_fraction(rest);
                post = before != s.len();
            }
            if !pre && !post {
                return Err(invalid(orig));
            }
            let unit_end = s
                .find(|c: char| c == '.' || c.is_ascii_digit())
                .unwrap_or(s.len());
            if unit_end == 0 {
                return Err(ParseDurationError {
                    message: format!("missing unit in duration {orig:?}"),
                });
            }
            let unit = &s[..unit_end];
            s = &s[unit_end..];
            let unit = unit_nanos(unit).ok_or_else(|| ParseDurationError {
                message: format!("unknown unit {unit:?} in duration {orig:?}"),
            })?;
            if v > ONE_SHL_63 / unit {
                return Err(invalid(orig));
            }
            v *= unit;
            if frac > 0 {
                // Go does this step in float64 too: exact enough for fractions of an hour.
                #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
                #[allow(clippy::cast_sign_loss)]
                let extra = (frac as f64 * (unit as f64 / scale)) as u64;
                v = v.checked_add(extra).ok_or_else(|| invalid(orig))?;
                if v > ONE_SHL_63 {
                    return Err(invalid(orig));
                }
            }
            total = total.checked_add(v).ok_or_else(|| invalid(orig))?;
            if total > ONE_SHL_63 {
                return Err(invalid(orig));
            }
        }
        if neg {
            // total <= 1 << 63, so the negation fits (it is i64::MIN at the limit).
            #[allow(clippy::cast_possible_wrap)]
            return Ok(Duration {
                nanos: (total as i64).wrapping_neg(),
            });
        }
        i64::try_from(total)
            .map(Duration::from_nanos)
            .map_err(|_| invalid(orig))
    }
}

/// Writes `v / 10^prec` with the fraction's trailing zeros (and a bare `.`) left out,
/// like Go's `fmtFrac` followed by `fmtInt`.
fn write_with_fraction(out: &mut String, v: u64, prec: u32) {
    let pow = 10u64.pow(prec);
    let (int, frac) = (v / pow, v % pow);
    out.push_str(&int.to_string());
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = prec as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

impl fmt::Display for Duration {
    /// Prints like Go's `time.Duration.String`: `0s`, `1.5ms`, `250ms`, `1m30s`, `1h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if self.nanos < 0 {
            out.push('-');
        }
        let u = self.nanos.unsigned_abs();
        if u == 0 {
            return f.write_str("0s");
        }
        if u < NANOS_PER_SEC {
            let (prec, unit) = if u < NANOS_PER_MICRO {
                (0, "ns")
            } else if u < NANOS_PER_MILLI {
                (3, "\u{b5}s")
            } else {
                (6, "ms")
            };
            write_with_fraction(&mut out, u, prec);
            out.push_str(unit);
        } else {
            let secs = u / NANOS_PER_SEC;
            let (mins, hours) = (secs / 60, secs / 3600);
            if hours > 0 {
                out.push_str(&format!("{hours}h"));
            }
            if mins > 0 {
                out.push_str(&format!("{}m", mins % 60));
            }
            write_with_fraction(&mut out, (secs % 60) * NANOS_PER_SEC + u % NANOS_PER_SEC, 9);
            out.push('s');
        }
        f.write_str(&out)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    /// Accepts only a string, as `metav1.Duration` does: a bare number is an error.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\" or \"1m30s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// `logging.flushFrequency` is a component-base `TimeOrMetaDuration`: a duration string,
/// or a bare integer count of nanoseconds. It is always written back as a string.
pub(crate) mod string_or_nanos {
    use super::Duration;
    use std::fmt;

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"5s\" or an integer of nanoseconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Ok(Duration::from_nanos(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                i64::try_from(v)
                    .map(Duration::from_nanos)
                    .map_err(|_| E::custom("duration out of range"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> i64 {
        s.parse::<Duration>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .as_nanos()
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn go_duration_strings_parse_to_their_nanoseconds() {
        let table: &[(&str, i64)] = &[
            ("0", 0),
            ("0s", 0),
            ("-0", 0),
            ("+0s", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0.5s", -S / 2),
            ("1.5h", 5400 * S),
            ("1m30s", 90 * S),
            ("1h0m0s", 3600 * S),
            ("2h45m", (2 * 3600 + 45 * 60) * S),
            ("250ms", 250_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{b5}s", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14 * S),
            ("15m", 15 * 60 * S),
            ("16h", 16 * 3600 * S),
            ("3h30m", 12600 * S),
            ("10.5s4m", (4 * 60 + 10) * S + S / 2),
            ("-2m3.4s", -(123 * S + 4 * S / 10)),
            ("1h2m3s4ms5us6ns", 3723 * S + 4_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * 60 * S),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036.854775807s", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * 60 * S),
            (".5s", S / 2),
            ("5.s", 5 * S),
        ];
        for &(text, want) in table {
            assert_eq!(d(text), want, "{text}");
        }
    }

    #[test]
    fn malformed_durations_are_rejected_with_go_messages() {
        let table: &[(&str, &str)] = &[
            ("", "invalid duration \"\""),
            ("3", "missing unit in duration \"3\""),
            ("-", "invalid duration \"-\""),
            ("s", "invalid duration \"s\""),
            (".", "invalid duration \".\""),
            ("-.", "invalid duration \"-.\""),
            (".s", "invalid duration \".s\""),
            ("+.s", "invalid duration \"+.s\""),
            ("1d", "unknown unit \"d\" in duration \"1d\""),
            ("30 s", "unknown unit \" s\" in duration \"30 s\""),
            ("1.0.0s", "missing unit in duration \"1.0.0s\""),
            (
                "9223372036854775808ns",
                "invalid duration \"9223372036854775808ns\"",
            ),
            (
                "9223372036854775.808us",
                "invalid duration \"9223372036854775.808us\"",
            ),
            ("3000000h", "invalid duration \"3000000h\""),
            (
                "-9223372036854775809ns",
                "invalid duration \"-9223372036854775809ns\"",
            ),
        ];
        for &(text, want) in table {
            let err = text.parse::<Duration>().unwrap_err();
            assert_eq!(err.to_string(), want, "{text}");
        }
    }

    #[test]
    fn durations_print_like_go_time_duration_string() {
        let table: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (250_000_000, "250ms"),
            (S, "1s"),
            (3 * S / 2, "1.5s"),
            (30 * S, "30s"),
            (90 * S, "1m30s"),
            (15 * 60 * S, "15m0s"),
            (3600 * S, "1h0m0s"),
            (24 * 3600 * S, "24h0m0s"),
            (4 * 60 * S + 5 * S + S / 1000, "4m5.001s"),
            (5 * 3600 * S + 6 * 60 * S + 7 * S + 1, "5h6m7.000000001s"),
            (-S, "-1s"),
            (-1, "-1ns"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for &(nanos, want) in table {
            assert_eq!(Duration::from_nanos(nanos).to_string(), want, "{nanos}");
        }
    }

    #[test]
    fn std_conversion_clamps_negative_to_zero_and_saturates_large_values() {
        assert_eq!(Duration::from_secs(-1).to_std(), std::time::Duration::ZERO);
        assert_eq!(
            Duration::from_millis(250).to_std(),
            std::time::Duration::from_millis(250)
        );
        assert_eq!(
            Duration::from_std(std::time::Duration::MAX).as_nanos(),
            i64::MAX
        );
        assert_eq!(
            Duration::from(std::time::Duration::from_secs(90)),
            Duration::from_secs(90)
        );
        assert_eq!(Duration::from_hours(1), Duration::from_mins(60));
    }

    #[test]
    fn serde_uses_the_string_form_and_rejects_numbers() {
        let v: Duration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(v, Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"1m30s\"");
        assert!(serde_json::from_str::<Duration>("30").is_err());
    }

    proptest! {
        /// Printing then parsing gives back the same nanoseconds, for every i64.
        #[test]
        fn print_then_parse_round_trips(nanos in any::<i64>()) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }

        /// Whole seconds, minutes and hours round-trip whatever unit they were written in.
        #[test]
        fn whole_units_parse_exactly(h in 0i64..10_000, m in 0i64..60, s in 0i64..60, ms in 0i64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let want = ((h * 3600 + m * 60 + s) * 1000 + ms) * 1_000_000;
            prop_assert_eq!(text.parse::<Duration>().unwrap().as_nanos(), want);
        }
    }
}
