//! One rule: the matches and targets kproxy emits, parsed from `iptables-restore` text.
//! Anything else is an error, so the model never silently ignores part of a rule.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// A conntrack state, as `-m conntrack --ctstate` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CtState {
    /// `NEW`.
    New,
    /// `ESTABLISHED`.
    Established,
    /// `RELATED`.
    Related,
    /// `INVALID`.
    Invalid,
    /// `DNAT`: the connection's destination was translated.
    Dnat,
}

impl CtState {
    fn parse(s: &str) -> Option<CtState> {
        Some(match s {
            "NEW" => CtState::New,
            "ESTABLISHED" => CtState::Established,
            "RELATED" => CtState::Related,
            "INVALID" => CtState::Invalid,
            "DNAT" => CtState::Dnat,
            _ => return None,
        })
    }
}

/// What `-m recent` does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecentOp {
    /// `--set`: record the source (always matches).
    Set,
    /// `--rcheck --seconds N --reap`: matches if the source was seen in the last N seconds.
    Rcheck {
        /// `--seconds`.
        seconds: u32,
    },
}

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// `-m comment --comment TEXT`.
    Comment(String),
    /// `-p PROTO` (and the `-m PROTO` module, which adds nothing more).
    Protocol(String),
    /// `--dport N`.
    DestPort(u16),
    /// `[!] -s NET`.
    Source {
        /// The network.
        net: IpNet,
        /// `!`.
        negated: bool,
    },
    /// `[!] -d NET`.
    Destination {
        /// The network.
        net: IpNet,
        /// `!`.
        negated: bool,
    },
    /// `[!] -i NAME` (a trailing `+` matches any suffix).
    InInterface {
        /// The name or prefix.
        name: String,
        /// `!`.
        negated: bool,
    },
    /// `-m addrtype --src-type LOCAL` / `--dst-type LOCAL`.
    AddrTypeLocal {
        /// `--src-type` (else `--dst-type`).
        source: bool,
        /// `!`.
        negated: bool,
    },
    /// `-m statistic --mode random --probability P` (P as written).
    Probability(String),
    /// `-m recent --name NAME ...`.
    Recent {
        /// The list name.
        name: String,
        /// What it does.
        op: RecentOp,
    },
    /// `-m mark [!] --mark VALUE/MASK`.
    Mark {
        /// Value.
        value: u32,
        /// Mask.
        mask: u32,
        /// `!`.
        negated: bool,
    },
    /// `-m conntrack [!] --ctstate A,B`.
    CtState {
        /// The states.
        states: Vec<CtState>,
        /// `!`.
        negated: bool,
    },
    /// `-m nfacct --nfacct-name NAME`: counts, always matches.
    Nfacct(String),
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// No `-j`: the rule only counts.
    None,
    /// `-j CHAIN`: a user chain.
    Jump(String),
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j REJECT`.
    Reject,
    /// `-j RETURN`.
    Return,
    /// `-j MASQUERADE [--random-fully]`.
    Masquerade {
        /// `--random-fully`.
        random_fully: bool,
    },
    /// `-j MARK --or-mark M`.
    MarkOr(u32),
    /// `-j MARK --xor-mark M`.
    MarkXor(u32),
    /// `-j DNAT --to-destination IP:PORT`.
    Dnat(SocketAddr),
}

/// A parsed rule and its text.
#[derive(Debug, Clone, Eq)]
pub struct Rule {
    /// The matches, in order.
    pub matches: Vec<Match>,
    /// The target.
    pub target: Target,
    /// The spec as written (after `-A CHAIN `).
    pub text: String,
}

impl PartialEq for Rule {
    /// Rules are equal when they parse the same, as `iptables -D` compares them.
    fn eq(&self, other: &Self) -> bool {
        self.matches == other.matches && self.target == other.target
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits a line into words, keeping double-quoted strings (without their quotes) whole.
pub(crate) fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut w = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => {
                        if let Some(n) = chars.next() {
                            w.push(n);
                        }
                    }
                    Some(ch) => w.push(ch),
                    None => return Err("unterminated quote".into()),
                }
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                w.push(ch);
                chars.next();
            }
        }
        out.push(w);
    }
    Ok(out)
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("bad address {s:?}"))
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("bad number {s:?}"))
}

type Words<'a, 'b> = std::iter::Peekable<std::slice::Iter<'a, &'b str>>;

fn next(it: &mut Words<'_, '_>, what: &str) -> Result<String, String> {
    it.next()
        .map(|s| (*s).to_owned())
        .ok_or_else(|| format!("{what} needs a value"))
}

/// Parses a rule spec (the words after `-A CHAIN`).
pub fn parse_rule(words: &[String]) -> Result<Rule, String> {
    let text = words
        .iter()
        .map(|w| {
            if w.contains(' ') || w.is_empty() {
                format!("\"{w}\"")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut matches = Vec::new();
    let mut target = Target::None;
    let mut negate = false;
    let owned: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut it = owned.iter().peekable();
    let mut recent_name: Option<String> = None;
    let mut recent_seconds: Option<u32> = None;
    while let Some(&w) = it.next() {
        let neg = std::mem::take(&mut negate);
        match w {
            "!" => negate = true,
            "-m" => {
                let module = next(&mut it, "-m")?;
                match module.as_str() {
                    "comment" | "tcp" | "udp" | "sctp" | "addrtype" | "statistic" | "recent"
                    | "mark" | "conntrack" | "nfacct" => {}
                    other => return Err(format!("unsupported match module {other:?}")),
                }
            }
            "--comment" => matches.push(Match::Comment(next(&mut it, w)?)),
            "-p" => matches.push(Match::Protocol(next(&mut it, w)?)),
            "--dport" => {
                let v = next(&mut it, w)?;
                matches.push(Match::DestPort(
                    v.parse().map_err(|_| format!("bad port {v:?}"))?,
                ));
            }
            "-s" => matches.push(Match::Source {
                net: parse_net(&next(&mut it, w)?)?,
                negated: neg,
            }),
            "-d" => matches.push(Match::Destination {
                net: parse_net(&next(&mut it, w)?)?,
                negated: neg,
            }),
            "-i" => matches.push(Match::InInterface {
                name: next(&mut it, w)?,
                negated: neg,
            }),
            "--src-type" | "--dst-type" => {
                let v = next(&mut it, w)?;
                if v != "LOCAL" {
                    return Err(format!("unsupported address type {v:?}"));
                }
                matches.push(Match::AddrTypeLocal {
                    source: w == "--src-type",
                    negated: neg,
                });
            }
            "--mode" => {
                let v = next(&mut it, w)?;
                if v != "random" {
                    return Err(format!("unsupported statistic mode {v:?}"));
                }
            }
            "--probability" => {
                let v = next(&mut it, w)?;
                v.parse::<f64>()
                    .map_err(|_| format!("bad probability {v:?}"))?;
                matches.push(Match::Probability(v));
            }
            "--name" => recent_name = Some(next(&mut it, w)?),
            "--set" => {
                let name = recent_name.take().ok_or("--set without --name")?;
                matches.push(Match::Recent {
                    name,
                    op: RecentOp::Set,
                });
            }
            "--rcheck" => {}
            "--seconds" => {
                let v = next(&mut it, w)?;
                recent_seconds = Some(v.parse().map_err(|_| format!("bad seconds {v:?}"))?);
            }
            "--reap" => {
                let name = recent_name.take().ok_or("--reap without --name")?;
                let seconds = recent_seconds.take().ok_or("--reap without --seconds")?;
                matches.push(Match::Recent {
                    name,
                    op: RecentOp::Rcheck { seconds },
                });
            }
            "--mark" => {
                let v = next(&mut it, w)?;
                let (value, mask) = v.split_once('/').unwrap_or((v.as_str(), "0xffffffff"));
                matches.push(Match::Mark {
                    value: parse_u32(value)?,
                    mask: parse_u32(mask)?,
                    negated: neg,
                });
            }
            "--ctstate" => {
                let v = next(&mut it, w)?;
                let states = v
                    .split(',')
                    .map(|s| CtState::parse(s).ok_or_else(|| format!("unsupported ctstate {s:?}")))
                    .collect::<Result<Vec<_>, _>>()?;
                matches.push(Match::CtState {
                    states,
                    negated: neg,
                });
            }
            "--nfacct-name" => matches.push(Match::Nfacct(next(&mut it, w)?)),
            "-j" => {
                let t = next(&mut it, w)?;
                target = match t.as_str() {
                    "ACCEPT" => Target::Accept,
                    "DROP" => Target::Drop,
                    "REJECT" => Target::Reject,
                    "RETURN" => Target::Return,
                    "MASQUERADE" => {
                        let random_fully = it.peek().is_some_and(|w| **w == "--random-fully");
                        if random_fully {
                            it.next();
                        }
                        Target::Masquerade { random_fully }
                    }
                    "MARK" => {
                        let op = next(&mut it, "MARK")?;
                        let v = parse_u32(&next(&mut it, "MARK")?)?;
                        match op.as_str() {
                            "--or-mark" => Target::MarkOr(v),
                            "--xor-mark" => Target::MarkXor(v),
                            other => return Err(format!("unsupported MARK option {other:?}")),
                        }
                    }
                    "DNAT" => {
                        let opt = next(&mut it, "DNAT")?;
                        if opt != "--to-destination" {
                            return Err(format!("unsupported DNAT option {opt:?}"));
                        }
                        let v = next(&mut it, "DNAT")?;
                        Target::Dnat(
                            v.parse()
                                .map_err(|_| format!("bad DNAT destination {v:?}"))?,
                        )
                    }
                    chain if chain.starts_with("KUBE-") => Target::Jump(chain.to_owned()),
                    other => return Err(format!("unsupported target {other:?}")),
                };
            }
            other => return Err(format!("unsupported option {other:?}")),
        }
    }
    if negate {
        return Err("dangling !".into());
    }
    if recent_name.is_some() || recent_seconds.is_some() {
        return Err("incomplete -m recent".into());
    }
    Ok(Rule {
        matches,
        target,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Rule, String> {
        parse_rule(&words(s)?)
    }

    #[test]
    fn parses_every_match_kproxy_emits() {
        let r = parse("-m comment --comment \"ns/svc:p cluster IP\" -m tcp -p tcp -d 10.0.0.1 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ").unwrap();
        assert_eq!(r.matches.len(), 5);
        assert_eq!(r.target, Target::Jump("KUBE-MARK-MASQ".into()));
        assert!(matches!(&r.matches[4], Match::Source { negated: true, .. }));
        let r = parse("-m recent --name KUBE-SEP-X --rcheck --seconds 10800 --reap -j KUBE-SEP-X")
            .unwrap();
        assert_eq!(
            r.matches,
            [Match::Recent {
                name: "KUBE-SEP-X".into(),
                op: RecentOp::Rcheck { seconds: 10800 }
            }]
        );
        let r = parse("-m mark ! --mark 0x00004000/0x00004000 -j RETURN").unwrap();
        assert_eq!(
            r.matches,
            [Match::Mark {
                value: 0x4000,
                mask: 0x4000,
                negated: true
            }]
        );
        let r = parse("-m tcp -p tcp -j DNAT --to-destination [fd00::1]:80").unwrap();
        assert_eq!(r.target, Target::Dnat("[fd00::1]:80".parse().unwrap()));
        let r = parse("-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP").unwrap();
        assert!(
            matches!(&r.matches[0], Match::CtState { negated: true, states } if states.len() == 3)
        );
    }

    #[test]
    fn rejects_what_it_does_not_model() {
        assert!(parse("-m string --string foo -j DROP").is_err());
        assert!(parse("-j LOG").is_err());
        assert!(parse("-o eth0 -j ACCEPT").is_err());
        assert!(parse("-m comment --comment \"open").is_err());
    }
}
