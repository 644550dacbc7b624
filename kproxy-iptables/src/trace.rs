//! The packet tracer: follows one NEW packet through a [`Ruleset`] the way netfilter
//! would (nat PREROUTING or OUTPUT, then filter INPUT/FORWARD/OUTPUT, then nat
//! POSTROUTING), and returns every possible outcome with its probability.
//!
//! `-m statistic --mode random` splits the trace in two; `-m recent --rcheck` never
//! matches (the first packet of a client has no affinity entry yet).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use kproxy_core::KubeProxyConfiguration;
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::service_map::{NodeFacts, ServiceMap};

use crate::error::{Error, Result};
use crate::plan::{self, JUMP_RULES, KUBELET_JUMP_RULES, PlanConfig};
use crate::ruleset::{CtState, Match, RecentOp, Rule, Ruleset, Target};

/// Most jumps one trace may follow before it is declared a loop.
pub const MAX_DEPTH: usize = 64;

/// A packet to trace: the first packet of a connection (conntrack state NEW).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// The interface it arrived on (`None` for packets sent by the node itself).
    pub in_iface: Option<String>,
    /// Whether the node itself sends it (nat OUTPUT path; `--src-type LOCAL` matches).
    pub src_local: bool,
}

/// How a trace ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Delivered or forwarded.
    Accept,
    /// Silently dropped.
    Drop,
    /// Rejected (the client gets an ICMP error at once).
    Reject,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Accept => "ACCEPT",
            Verdict::Drop => "DROP",
            Verdict::Reject => "REJECT",
        })
    }
}

/// One possible fate of the packet.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOutcome {
    /// Probability of this outcome (the outcomes of a trace sum to 1).
    pub probability: f64,
    /// Accept, drop or reject.
    pub verdict: Verdict,
    /// The endpoint it was DNATed to, if any.
    pub dnat: Option<SocketAddr>,
    /// Whether it leaves with its source masqueraded.
    pub masquerade: bool,
    /// The rule that decided the verdict (`table/chain: rule`), or the policy.
    pub decided_by: String,
    /// The chains it went through, as `table/chain`.
    pub path: Vec<String>,
}

/// The outcomes of one packet.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceResult {
    /// The packet.
    pub packet: Packet,
    /// Its possible fates, in rule order.
    pub outcomes: Vec<TraceOutcome>,
}

#[derive(Debug, Clone)]
struct St {
    prob: f64,
    mark: u32,
    dnat: Option<SocketAddr>,
    masquerade: bool,
    path: Vec<String>,
    decided_by: String,
}

enum Flow {
    Continue,
    Verdict(Verdict),
}

enum Hit {
    Yes,
    No,
    Maybe(f64),
}

struct Tracer<'a> {
    rs: &'a Ruleset,
    pkt: &'a Packet,
    local: &'a [IpAddr],
}

impl Tracer<'_> {
    fn dst(&self, st: &St) -> (IpAddr, u16) {
        st.dnat
            .map_or((self.pkt.dst, self.pkt.dport), |a| (a.ip(), a.port()))
    }

    fn eval(&self, r: &Rule, st: &St) -> Hit {
        let mut p = 1.0;
        let (dst, dport) = self.dst(st);
        for m in &r.matches {
            let ok = match m {
                Match::Comment(_) | Match::Nfacct(_) => true,
                Match::Protocol(proto) => self.pkt.protocol.as_lower() == proto,
                Match::DestPort(n) => dport == *n,
                Match::Source { net, negated } => net.contains(&self.pkt.src) != *negated,
                Match::Destination { net, negated } => net.contains(&dst) != *negated,
                Match::InInterface { name, negated } => {
                    let iface = self.pkt.in_iface.as_deref().unwrap_or("");
                    let hit = match name.strip_suffix('+') {
                        Some(prefix) => iface.starts_with(prefix) && !iface.is_empty(),
                        None => iface == name,
                    };
                    hit != *negated
                }
                Match::AddrTypeLocal { source, negated } => {
                    let hit = if *source {
                        self.pkt.src_local || self.local.contains(&self.pkt.src)
                    } else {
                        self.local.contains(&dst)
                    };
                    hit != *negated
                }
                Match::Probability(s) => {
                    p *= s.parse::<f64>().unwrap_or(0.0);
                    true
                }
                Match::Recent { op, .. } => matches!(op, RecentOp::Set),
                Match::Mark {
                    value,
                    mask,
                    negated,
                } => ((st.mark & mask) == *value) != *negated,
                Match::CtState { states, negated } => {
                    let hit = states
                        .iter()
                        .any(|s| *s == CtState::New || (*s == CtState::Dnat && st.dnat.is_some()));
                    hit != *negated
                }
            };
            if !ok {
                return Hit::No;
            }
        }
        if p < 1.0 { Hit::Maybe(p) } else { Hit::Yes }
    }

    fn rules(&self, table: &str, chain: &str) -> Result<&[Rule]> {
        self.rs
            .chain(table, chain)
            .map(|c| c.rules.as_slice())
            .ok_or_else(|| Error::NoSuchChain {
                table: table.to_owned(),
                chain: chain.to_owned(),
            })
    }

    fn run(
        &self,
        table: &str,
        chain: &str,
        mut idx: usize,
        mut st: St,
        depth: usize,
    ) -> Result<Vec<(St, Flow)>> {
        if depth > MAX_DEPTH {
            return Err(Error::TraceTooDeep(MAX_DEPTH));
        }
        let rules = self.rules(table, chain)?;
        while idx < rules.len() {
            match self.eval(&rules[idx], &st) {
                Hit::No => idx += 1,
                Hit::Yes => return self.fire(table, chain, idx, st, depth),
                Hit::Maybe(p) => {
                    let mut yes = st.clone();
                    yes.prob *= p;
                    st.prob *= 1.0 - p;
                    let mut out = self.fire(table, chain, idx, yes, depth)?;
                    out.extend(self.run(table, chain, idx + 1, st, depth)?);
                    return Ok(out);
                }
            }
        }
        Ok(vec![(st, Flow::Continue)])
    }

    fn fire(
        &self,
        table: &str,
        chain: &str,
        idx: usize,
        mut st: St,
        depth: usize,
    ) -> Result<Vec<(St, Flow)>> {
        let rule = &self.rules(table, chain)?[idx];
        let decided = |st: &mut St| st.decided_by = format!("{table}/{chain}: {rule}");
        let verdict = |mut st: St, v: Verdict| {
            decided(&mut st);
            Ok(vec![(st, Flow::Verdict(v))])
        };
        match &rule.target {
            Target::None => self.run(table, chain, idx + 1, st, depth),
            Target::MarkOr(m) => {
                st.mark |= m;
                self.run(table, chain, idx + 1, st, depth)
            }
            Target::MarkXor(m) => {
                st.mark ^= m;
                self.run(table, chain, idx + 1, st, depth)
            }
            Target::Jump(to) => {
                st.path.push(format!("{table}/{to}"));
                let mut out = Vec::new();
                for (s, flow) in self.run(table, to, 0, st, depth + 1)? {
                    match flow {
                        Flow::Continue => out.extend(self.run(table, chain, idx + 1, s, depth)?),
                        v @ Flow::Verdict(_) => out.push((s, v)),
                    }
                }
                Ok(out)
            }
            Target::Return => Ok(vec![(st, Flow::Continue)]),
            Target::Accept => verdict(st, Verdict::Accept),
            Target::Drop => verdict(st, Verdict::Drop),
            Target::Reject => verdict(st, Verdict::Reject),
            Target::Dnat(a) => {
                st.dnat = Some(*a);
                verdict(st, Verdict::Accept)
            }
            Target::Masquerade { .. } => {
                st.masquerade = true;
                verdict(st, Verdict::Accept)
            }
        }
    }

    /// Runs a built-in chain; falling off its end applies its policy.
    fn hook(&self, table: &str, chain: &str, mut st: St) -> Result<Vec<(St, Verdict)>> {
        st.path.push(format!("{table}/{chain}"));
        let policy = match self.rs.chain(table, chain) {
            Some(c) => c.policy.clone().unwrap_or_else(|| "ACCEPT".into()),
            None => return Ok(vec![(st, Verdict::Accept)]),
        };
        let mut out = Vec::new();
        for (mut s, flow) in self.run(table, chain, 0, st, 0)? {
            match flow {
                Flow::Verdict(v) => out.push((s, v)),
                Flow::Continue => {
                    let v = match policy.as_str() {
                        "DROP" => Verdict::Drop,
                        _ => Verdict::Accept,
                    };
                    s.decided_by = format!("{table}/{chain}: policy {policy}");
                    out.push((s, v));
                }
            }
        }
        Ok(out)
    }
}

/// Traces `pkt` through `rs`; `local` are the node's addresses (what
/// `-m addrtype --dst-type LOCAL` matches).
pub fn trace_packet(rs: &Ruleset, pkt: &Packet, local: &[IpAddr]) -> Result<TraceResult> {
    let t = Tracer { rs, pkt, local };
    let start = St {
        prob: 1.0,
        mark: 0,
        dnat: None,
        masquerade: false,
        path: Vec::new(),
        decided_by: String::new(),
    };
    let mut outcomes = Vec::new();
    let nat_hook = if pkt.src_local {
        "OUTPUT"
    } else {
        "PREROUTING"
    };
    for (st, v) in t.hook("nat", nat_hook, start)? {
        if v != Verdict::Accept {
            outcomes.push(finish(st, v));
            continue;
        }
        let (dst, _) = t.dst(&st);
        let filter_hook = if pkt.src_local {
            "OUTPUT"
        } else if local.contains(&dst) {
            "INPUT"
        } else {
            "FORWARD"
        };
        let nat_decision = st.decided_by.clone();
        for (mut st, v) in t.hook("filter", filter_hook, st)? {
            if v != Verdict::Accept || filter_hook == "INPUT" {
                outcomes.push(finish(st, v));
                continue;
            }
            let filter_decision = std::mem::take(&mut st.decided_by);
            for (mut st, _) in t.hook("nat", "POSTROUTING", st)? {
                st.decided_by = if st.dnat.is_some() {
                    nat_decision.clone()
                } else {
                    filter_decision.clone()
                };
                outcomes.push(finish(st, Verdict::Accept));
            }
        }
    }
    Ok(TraceResult {
        packet: pkt.clone(),
        outcomes,
    })
}

fn finish(st: St, verdict: Verdict) -> TraceOutcome {
    TraceOutcome {
        probability: st.prob,
        verdict,
        dnat: st.dnat,
        masquerade: st.masquerade,
        decided_by: st.decided_by,
        path: st.path,
    }
}

/// The model of what a full sync installs: the restore text plus the jump rules from the
/// built-in chains, prepended in upstream's order.
pub fn model_of(text: &str) -> Result<Ruleset> {
    let mut rs = Ruleset::parse(text)?;
    for j in JUMP_RULES.iter().chain(&KUBELET_JUMP_RULES) {
        rs.ensure_jump(j)?;
    }
    Ok(rs)
}

/// The exact text a full sync of `family` loads, for `kproxy plan --proxy-mode iptables`.
pub fn render_plan(
    map: &ServiceMap,
    node: &NodeFacts,
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
) -> Result<String> {
    let pc = PlanConfig::from_config(cfg, family)?;
    Ok(plan::plan(
        map,
        &kproxy_core::ChangeSet::full(),
        node,
        &pc,
        family,
        None,
    )
    .text)
}

/// Traces `packet` through the rules a full sync would install, for `kproxy trace`.
pub fn trace(
    map: &ServiceMap,
    node: &NodeFacts,
    cfg: &KubeProxyConfiguration,
    packet: &Packet,
) -> Result<TraceResult> {
    let family = IpFamily::of(&packet.dst);
    let rs = model_of(&render_plan(map, node, cfg, family)?)?;
    trace_packet(&rs, packet, &node.local_addresses)
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dst = SocketAddr::new(self.dst, self.dport);
        write!(f, "{} {} -> {dst}", self.protocol.as_lower(), self.src)?;
        match (&self.in_iface, self.src_local) {
            (_, true) => f.write_str(" (from this node)"),
            (Some(i), false) => write!(f, " (in {i})"),
            (None, false) => Ok(()),
        }
    }
}

impl fmt::Display for TraceResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "packet: {}", self.packet)?;
        for o in &self.outcomes {
            write!(f, "  {:>7.3}%  {}", o.probability * 100.0, o.verdict)?;
            if let Some(d) = o.dnat {
                write!(f, " DNAT to {d}")?;
            }
            writeln!(f, "{}", if o.masquerade { ", masqueraded" } else { "" })?;
            writeln!(f, "            path: {}", o.path.join(" -> "))?;
            writeln!(f, "            decided by {}", o.decided_by)?;
        }
        Ok(())
    }
}
