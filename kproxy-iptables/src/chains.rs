//! Chain names: the fixed ones and upstream's hashed per-service names.
//!
//! Upstream `pkg/proxy/iptables/proxier.go` (`portProtoHash`,
//! `servicePortEndpointChainName`): `PREFIX + base32(sha256(S))[:16]`, with
//! `S = "<ns>/<svc>[:<port>]" + lower(protocol)` for the service chains and
//! `S + "<ip>:<port>"` (IPv6 bracketed) for an endpoint chain. The 16 base32 characters
//! keep names under iptables' 28-character limit.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};

/// nat and filter: service dispatch (nat) and REJECT/DROP of ports without endpoints (filter).
pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
/// filter: REJECT/DROP of external IPs, LB IPs and node ports without (local) endpoints.
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
/// nat: node port dispatch; filter: health check node port ACCEPTs.
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
/// nat: masquerades marked traffic.
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
/// nat: sets the masquerade mark.
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// filter: INVALID drop and accepting marked or established forwarded traffic.
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
/// filter: drops load-balancer traffic that source ranges did not let through.
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
/// filter: a copy of kubelet's anti-martian rule (IPv4 with localhost node ports).
pub const KUBE_FIREWALL: &str = "KUBE-FIREWALL";
/// mangle, nat, filter: an empty chain whose disappearance means someone flushed the
/// tables (upstream `ipt.Monitor`).
pub const KUBE_PROXY_CANARY: &str = "KUBE-PROXY-CANARY";

/// Prefix of the cluster-policy chain of a service port.
pub const SVC_PREFIX: &str = "KUBE-SVC-";
/// Prefix of the local-policy chain of a service port.
pub const SVL_PREFIX: &str = "KUBE-SVL-";
/// Prefix of the external-traffic chain of a service port.
pub const EXT_PREFIX: &str = "KUBE-EXT-";
/// Prefix of the source-range chain of a load-balancer port.
pub const FW_PREFIX: &str = "KUBE-FW-";
/// Prefix of an endpoint chain.
pub const SEP_PREFIX: &str = "KUBE-SEP-";

/// Whether `name` is a per-service or per-endpoint chain (upstream `isServiceChainName`).
pub fn is_service_chain(name: &str) -> bool {
    [SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX]
        .iter()
        .any(|p| name.starts_with(p))
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 (standard alphabet, `=` padding), as Go's `base32.StdEncoding`.
pub fn base32(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        // Characters carrying data: ceil(len * 8 / 5); the rest of the block is padding.
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                let idx = ((bits >> (35 - 5 * i)) & 0x1f) as usize;
                out.push(char::from(BASE32[idx]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `base32(sha256(s))[:16]`.
pub fn hash16(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    // 16 base32 characters are exactly the first 10 bytes (80 bits): no padding.
    base32(&digest[..10])
}

/// The four per-service chain names of one service port (they share one hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortChains {
    /// `KUBE-SVC-…`: cluster-policy endpoint selection.
    pub svc: String,
    /// `KUBE-SVL-…`: local-policy endpoint selection.
    pub svl: String,
    /// `KUBE-EXT-…`: external traffic (masquerade, short-circuits).
    pub ext: String,
    /// `KUBE-FW-…`: load-balancer source ranges.
    pub fw: String,
}

impl PortChains {
    /// The chains of service port `port_name` (`ns/svc:port`) with `protocol` in lower case.
    pub fn new(port_name: &str, protocol: &str) -> Self {
        let h = hash16(&format!("{port_name}{protocol}"));
        PortChains {
            svc: format!("{SVC_PREFIX}{h}"),
            svl: format!("{SVL_PREFIX}{h}"),
            ext: format!("{EXT_PREFIX}{h}"),
            fw: format!("{FW_PREFIX}{h}"),
        }
    }
}

/// The `KUBE-SEP-…` chain of endpoint `ep` of service port `port_name`.
pub fn endpoint_chain(port_name: &str, protocol: &str, ep: &SocketAddr) -> String {
    format!(
        "{SEP_PREFIX}{}",
        hash16(&format!("{port_name}{protocol}{ep}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_test_vectors() {
        // RFC 4648 section 10.
        let cases = [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ];
        for (input, want) in cases {
            assert_eq!(base32(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn kubernetes_https_service_chain_matches_upstream_dump() {
        // Upstream issue #34006 shows KUBE-SVC-NPX46M4PTMTKRN6Y for default/kubernetes:https.
        assert_eq!(
            PortChains::new("default/kubernetes:https", "tcp").svc,
            "KUBE-SVC-NPX46M4PTMTKRN6Y"
        );
    }

    #[test]
    fn chain_names_match_upstream_overall_rules_test() {
        // Upstream proxier_test.go TestOverallIPTablesRules.
        assert_eq!(
            PortChains::new("ns1/svc1:p80", "tcp").svc,
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            PortChains::new("ns5/svc5:p80", "tcp").fw,
            "KUBE-FW-NUKIZ6OKUXPJNT4C"
        );
        let ep: SocketAddr = "10.180.0.1:80".parse().unwrap();
        assert_eq!(
            endpoint_chain("ns1/svc1:p80", "tcp", &ep),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn service_chain_prefixes_are_recognised() {
        assert!(is_service_chain("KUBE-SEP-SXIVWICOYRO3J4NJ"));
        assert!(!is_service_chain(KUBE_SERVICES));
    }
}
