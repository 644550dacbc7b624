use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kproxy_core::model::SessionAffinity;
use proptest::prelude::*;

use super::*;

fn ep(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, n)), 8080)
}

fn client(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 168, 0, n))
}

fn eps(n: u8) -> Vec<SocketAddr> {
    (1..=n).map(ep).collect()
}

#[test]
fn empty_balancer_reports_missing_endpoints() {
    let mut b = Balancer::new(1, None);
    let err = b
        .next_endpoint(client(1), false, Instant::now())
        .unwrap_err();
    assert!(matches!(err, Error::NoEndpoints));
    assert_eq!(err.to_string(), "missing endpoints");
}

#[test]
fn update_shuffles_and_resets_only_when_the_set_changes() {
    let now = Instant::now();
    let mut b = Balancer::new(7, None);
    assert!(b.update(&eps(5)));
    let order = b.endpoints().to_vec();
    b.next_endpoint(client(1), false, now).unwrap();
    // Same set in another order: nothing changes, the index keeps going.
    let mut rev = eps(5);
    rev.reverse();
    assert!(!b.update(&rev));
    assert_eq!(b.endpoints(), order.as_slice());
    assert_eq!(b.next_endpoint(client(1), false, now).unwrap(), order[1]);
    // A new set: index back to 0 of the new order.
    assert!(b.update(&eps(4)));
    let first = b.endpoints()[0];
    assert_eq!(b.next_endpoint(client(1), false, now).unwrap(), first);
}

#[test]
fn the_same_seed_gives_the_same_order() {
    let mut a = Balancer::new(42, None);
    let mut b = Balancer::new(42, None);
    a.update(&eps(9));
    b.update(&eps(9));
    assert_eq!(a.endpoints(), b.endpoints());
    let mut c = Balancer::new(43, None);
    c.update(&eps(9));
    // Sorted sets are equal whatever the order.
    let mut x = c.endpoints().to_vec();
    x.sort();
    assert_eq!(x, eps(9));
}

#[test]
fn affinity_sticks_until_the_timeout_and_refreshes_on_use() {
    let t0 = Instant::now();
    let mut b = Balancer::new(
        3,
        Some(SessionAffinity {
            timeout_seconds: 10,
        }),
    );
    b.update(&eps(3));
    let first = b.next_endpoint(client(1), false, t0).unwrap();
    // Other clients move the round robin on; client 1 stays.
    b.next_endpoint(client(2), false, t0).unwrap();
    for s in [1, 5, 9, 18] {
        assert_eq!(
            b.next_endpoint(client(1), false, t0 + Duration::from_secs(s))
                .unwrap(),
            first,
            "at {s}s (last use refreshed each time)"
        );
    }
    // 10 s idle: expired, the next round-robin endpoint is taken.
    let later = b
        .next_endpoint(client(1), false, t0 + Duration::from_secs(28))
        .unwrap();
    assert_ne!(later, first);
}

#[test]
fn a_zero_timeout_means_three_hours() {
    let t0 = Instant::now();
    let mut b = Balancer::new(3, Some(SessionAffinity { timeout_seconds: 0 }));
    b.update(&eps(3));
    let first = b.next_endpoint(client(1), false, t0).unwrap();
    let at = |s| t0 + Duration::from_secs(s);
    assert_eq!(
        b.next_endpoint(client(1), false, at(10_799)).unwrap(),
        first
    );
    b.cleanup_stale(at(10_799 + 10_799));
    assert_eq!(b.sticky_clients(), 1);
    b.cleanup_stale(at(10_799 + 10_800));
    assert_eq!(b.sticky_clients(), 0);
}

#[test]
fn sticky_entries_of_removed_endpoints_are_dropped() {
    let t0 = Instant::now();
    let mut b = Balancer::new(
        5,
        Some(SessionAffinity {
            timeout_seconds: 100,
        }),
    );
    b.update(&eps(3));
    let mine = b.next_endpoint(client(1), false, t0).unwrap();
    let theirs = b.next_endpoint(client(2), false, t0).unwrap();
    let rest: Vec<SocketAddr> = eps(3).into_iter().filter(|e| *e != mine).collect();
    b.update(&rest);
    assert_eq!(b.sticky_clients(), 1);
    assert_ne!(b.next_endpoint(client(1), false, t0).unwrap(), mine);
    assert_eq!(b.next_endpoint(client(2), false, t0).unwrap(), theirs);
}

#[test]
fn reset_affinity_bypasses_the_sticky_endpoint_and_rebinds() {
    let t0 = Instant::now();
    let mut b = Balancer::new(
        9,
        Some(SessionAffinity {
            timeout_seconds: 100,
        }),
    );
    b.update(&eps(3));
    let first = b.next_endpoint(client(1), false, t0).unwrap();
    let retry = b.next_endpoint(client(1), true, t0).unwrap();
    assert_ne!(retry, first);
    assert_eq!(b.next_endpoint(client(1), false, t0).unwrap(), retry);
}

#[test]
fn switching_affinity_off_forgets_clients() {
    let t0 = Instant::now();
    let mut b = Balancer::new(
        9,
        Some(SessionAffinity {
            timeout_seconds: 100,
        }),
    );
    b.update(&eps(2));
    b.next_endpoint(client(1), false, t0).unwrap();
    b.set_affinity(None);
    assert_eq!(b.sticky_clients(), 0);
    let x = b.next_endpoint(client(1), false, t0).unwrap();
    assert_ne!(b.next_endpoint(client(1), false, t0).unwrap(), x);
}

/// Runs `dial_with_retries` against a fake dialer that fails for the `dead` endpoints,
/// and returns (result, dialled (endpoint, timeout) in order).
async fn dial_fake(
    b: &Mutex<Balancer>,
    dead: &[SocketAddr],
    now: Instant,
) -> (Result<SocketAddr>, Vec<(SocketAddr, Duration)>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let res = dial_with_retries(
        "ns/svc:http",
        |reset| b.lock().unwrap().next_endpoint(client(1), reset, now),
        |e, t| {
            log.lock().unwrap().push((e, t));
            let dead = dead.contains(&e);
            async move {
                if dead {
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                } else {
                    Ok(())
                }
            }
        },
        |_, _| {},
    )
    .await
    .map(|(e, ())| e);
    let log = log.lock().unwrap().clone();
    (res, log)
}

#[tokio::test]
async fn a_failed_dial_moves_to_the_next_endpoint_bypassing_affinity() {
    let t0 = Instant::now();
    let b = Mutex::new(Balancer::new(
        11,
        Some(SessionAffinity {
            timeout_seconds: 100,
        }),
    ));
    b.lock().unwrap().update(&eps(3));
    let (first, _) = dial_fake(&b, &[], t0).await;
    let sticky = first.unwrap();
    // The sticky endpoint dies: the retry takes the next one and re-binds the client.
    let (second, log) = dial_fake(&b, &[sticky], t0).await;
    let second = second.unwrap();
    assert_ne!(second, sticky);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0], (sticky, DIAL_TIMEOUTS[0]));
    assert_eq!(log[1], (second, DIAL_TIMEOUTS[1]));
    let (third, _) = dial_fake(&b, &[sticky], t0).await;
    assert_eq!(third.unwrap(), second);
}

#[tokio::test]
async fn four_attempts_with_growing_timeouts_then_give_up() {
    let b = Mutex::new(Balancer::new(1, None));
    b.lock().unwrap().update(&eps(2));
    let (res, log) = dial_fake(&b, &eps(2), Instant::now()).await;
    assert!(matches!(res, Err(Error::DialFailed { attempts: 4, .. })));
    let timeouts: Vec<Duration> = log.iter().map(|(_, t)| *t).collect();
    assert_eq!(timeouts, DIAL_TIMEOUTS.to_vec());
    // Round robin alternates between the two dead endpoints.
    assert_ne!(log[0].0, log[1].0);
    assert_eq!(log[0].0, log[2].0);
}

proptest! {
    /// Over k·n picks without affinity, each of the n endpoints is picked exactly k times.
    #[test]
    fn round_robin_is_fair(seed in any::<u64>(), n in 1u8..20, k in 1usize..6, skip in 0usize..20) {
        let now = Instant::now();
        let mut b = Balancer::new(seed, None);
        b.update(&eps(n));
        // Start anywhere in the cycle.
        for _ in 0..skip { b.next_endpoint(client(1), false, now).unwrap(); }
        let mut counts: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for i in 0..k * usize::from(n) {
            let e = b.next_endpoint(client((i % 200) as u8), false, now).unwrap();
            *counts.entry(e).or_default() += 1;
        }
        prop_assert_eq!(counts.len(), usize::from(n));
        prop_assert!(counts.values().all(|c| *c == k));
    }

    /// With affinity, every client gets one endpoint until it idles past the TTL, and the
    /// endpoint is always one of the current endpoints.
    #[test]
    fn affinity_is_stable_within_the_ttl(
        seed in any::<u64>(),
        n in 1u8..8,
        ttl in 1u32..100,
        steps in proptest::collection::vec((0u8..5, 0u64..3000), 1..60),
    ) {
        let t0 = Instant::now();
        let mut b = Balancer::new(seed, Some(SessionAffinity { timeout_seconds: ttl }));
        b.update(&eps(n));
        let mut last: BTreeMap<u8, (SocketAddr, Duration)> = BTreeMap::new();
        let mut clock = Duration::ZERO;
        for (c, advance_ms) in steps {
            clock += Duration::from_millis(advance_ms * 20);
            let e = b.next_endpoint(client(c), false, t0 + clock).unwrap();
            prop_assert!(eps(n).contains(&e));
            if let Some((prev, at)) = last.get(&c)
                && clock - *at < Duration::from_secs(u64::from(ttl))
            {
                prop_assert_eq!(e, *prev);
            }
            last.insert(c, (e, clock));
        }
    }
}
