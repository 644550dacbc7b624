//! The node's own addresses, read from its network interfaces as upstream reads them
//! (`GetNodeIPs` over the interfaces' addresses) for `nodePortAddresses` CIDRs and the
//! IPVS node-port virtual servers. The Node object's addresses are only what the
//! kubelet reported: a secondary interface, or an address added later, is missing
//! there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The dummy interface the IPVS mode binds service IPs to: they are local, but they are
/// not the node's (upstream excludes it the same way).
pub const IPVS_DUMMY: &str = "kube-ipvs0";

/// The addresses of every interface but [`IPVS_DUMMY`], sorted, without duplicates.
///
/// # Errors
/// `getifaddrs` failing (no `/proc`, seccomp): the caller falls back to the Node's
/// addresses.
pub fn interface_addresses() -> nix::Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs()?.filter_map(|a| {
        if a.interface_name == IPVS_DUMMY {
            return None;
        }
        let sa = a.address?;
        if let Some(v4) = sa.as_sockaddr_in() {
            Some(IpAddr::V4(v4.ip()))
        } else {
            sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        }
    });
    Ok(sorted(addrs))
}

/// The node's local addresses for a sync: the interfaces' when known (never without
/// loopback, which node ports also answer on), else the Node object's.
pub fn local_addresses(interfaces: Option<&[IpAddr]>, from_node: &[IpAddr]) -> Vec<IpAddr> {
    match interfaces {
        Some(ips) if !ips.is_empty() => sorted(ips.iter().copied().chain([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ])),
        _ => from_node.to_vec(),
    }
}

fn sorted(ips: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = ips.collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn interface_addresses_win_over_the_node_objects_and_keep_loopback() {
        let node = ips(&["10.0.0.5", "127.0.0.1", "::1"]);
        let host = ips(&["192.168.7.2", "10.0.0.5", "fd00::5"]);
        assert_eq!(
            local_addresses(Some(&host), &node),
            ips(&["10.0.0.5", "127.0.0.1", "192.168.7.2", "::1", "fd00::5"])
        );
        assert_eq!(local_addresses(None, &node), node);
        assert_eq!(local_addresses(Some(&[]), &node), node);
    }

    /// Root only: in a namespace of its own (entered by a thread of this test), the
    /// addresses are exactly those of its interfaces, and kube-ipvs0's are left out.
    #[test]
    fn a_namespaces_interface_addresses_are_read_without_kube_ipvs0() {
        use std::process::Command;
        let uid = Command::new("id").arg("-u").output();
        if !uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0") {
            eprintln!("skipping: not root");
            return;
        }
        let ns = format!("kp-host-{}", std::process::id());
        struct Ns(String);
        impl Drop for Ns {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let ok = Command::new("ip").args(["netns", "add", &ns]).status();
        assert!(ok.is_ok_and(|s| s.success()), "ip netns add");
        let guard = Ns(ns.clone());
        let ip = |args: &str| {
            let mut full = vec!["netns", "exec", &ns, "ip"];
            full.extend(args.split(' '));
            let s = Command::new("ip").args(&full).status();
            assert!(s.is_ok_and(|s| s.success()), "ip {args}");
        };
        ip("link set lo up");
        // This kernel may lack the dummy driver: veth pairs stand in for both devices.
        ip("link add eth9 type veth peer name eth9p");
        ip("addr add 10.250.3.4/24 dev eth9");
        ip("link set eth9 up");
        ip(&format!(
            "link add {IPVS_DUMMY} type veth peer name kipvs-peer"
        ));
        ip(&format!("addr add 10.96.0.10/32 dev {IPVS_DUMMY}"));
        let path = format!("/run/netns/{ns}");
        let got = std::thread::spawn(move || {
            let f = std::fs::File::open(path).expect("netns file");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            interface_addresses().expect("getifaddrs")
        })
        .join()
        .expect("thread");
        assert!(got.contains(&"10.250.3.4".parse().unwrap()), "{got:?}");
        assert!(got.contains(&"127.0.0.1".parse().unwrap()), "{got:?}");
        assert!(!got.contains(&"10.96.0.10".parse().unwrap()), "{got:?}");
        drop(guard);
    }
}
