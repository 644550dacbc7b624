//! A model of iptables tables: parse `iptables-restore` input, apply `--noflush` restores
//! and single rule edits as the kernel would, compare rulesets.
//!
//! Only what kproxy emits is understood ([`rule`]); anything else is an error, so a
//! property test over the model cannot pass by ignoring part of a rule.

pub mod rule;

use std::collections::BTreeMap;
use std::fmt;

pub use rule::{CtState, Match, RecentOp, Rule, Target};

use crate::chains::{KUBE_EXTERNAL_SERVICES, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL, KUBE_SERVICES};
use crate::error::{Error, Result};
use crate::plan::JumpRule;

/// One chain: its rules, and for a built-in chain its policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    /// `Some("ACCEPT")` etc. for a built-in chain, `None` for a user chain.
    pub policy: Option<String>,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// One table: chains by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableModel {
    /// The chains.
    pub chains: BTreeMap<String, Chain>,
}

fn builtins(table: &str) -> &'static [&'static str] {
    match table {
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        _ => &[],
    }
}

impl TableModel {
    fn new(name: &str) -> Self {
        let mut t = TableModel::default();
        for b in builtins(name) {
            t.chains.insert(
                (*b).to_owned(),
                Chain {
                    policy: Some("ACCEPT".into()),
                    rules: Vec::new(),
                },
            );
        }
        t
    }

    fn referenced(&self, chain: &str) -> bool {
        self.chains
            .values()
            .flat_map(|c| &c.rules)
            .any(|r| matches!(&r.target, Target::Jump(j) if j == chain))
    }
}

/// Tables by name (`filter`, `nat`, `mangle`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// The tables.
    pub tables: BTreeMap<String, TableModel>,
}

fn parse_err(line: usize, reason: impl Into<String>, text: &str) -> Error {
    Error::Parse {
        line,
        reason: reason.into(),
        text: text.to_owned(),
    }
}

impl Ruleset {
    /// An empty ruleset (no tables).
    pub fn new() -> Self {
        Ruleset::default()
    }

    /// Parses restore input into a fresh ruleset (as a restore without `--noflush` into
    /// empty tables).
    pub fn parse(text: &str) -> Result<Ruleset> {
        let mut r = Ruleset::new();
        r.restore(text, false)?;
        Ok(r)
    }

    /// The chain `table`/`name`, if it exists.
    pub fn chain(&self, table: &str, name: &str) -> Option<&Chain> {
        self.tables.get(table).and_then(|t| t.chains.get(name))
    }

    /// Applies restore input. With `noflush` only declared chains are flushed; without,
    /// each table in the input is emptied first. Each table commits on its own `COMMIT`
    /// and is left unchanged when anything in it fails, as iptables-restore does.
    pub fn restore(&mut self, text: &str, noflush: bool) -> Result<()> {
        let mut current: Option<(String, TableModel)> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if let Some(name) = l.strip_prefix('*') {
                if current.is_some() {
                    return Err(parse_err(n, "table started before COMMIT", raw));
                }
                let mut t = self
                    .tables
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| TableModel::new(name));
                if builtins(name).is_empty() {
                    return Err(parse_err(n, "unknown table", raw));
                }
                if !noflush {
                    t = TableModel::new(name);
                }
                current = Some((name.to_owned(), t));
                continue;
            }
            if l == "COMMIT" {
                let (name, t) = current
                    .take()
                    .ok_or_else(|| parse_err(n, "COMMIT outside a table", raw))?;
                self.tables.insert(name, t);
                continue;
            }
            let (tname, t) = current
                .as_mut()
                .ok_or_else(|| parse_err(n, "rule outside a table", raw))?;
            if let Some(decl) = l.strip_prefix(':') {
                let mut parts = decl.split_whitespace();
                let name = parts
                    .next()
                    .ok_or_else(|| parse_err(n, "empty chain line", raw))?;
                let policy = parts.next().unwrap_or("-");
                let chain = t.chains.entry(name.to_owned()).or_default();
                if policy != "-" {
                    if chain.policy.is_none() {
                        return Err(parse_err(n, "policy on a user chain", raw));
                    }
                    chain.policy = Some(policy.to_owned());
                }
                chain.rules.clear();
                continue;
            }
            let words = rule::words(l).map_err(|e| parse_err(n, e, raw))?;
            apply_command(tname, t, &words).map_err(|e| match e {
                Error::Parse { reason, .. } => parse_err(n, reason, raw),
                other => other,
            })?;
        }
        if current.is_some() {
            return Err(parse_err(text.lines().count(), "missing COMMIT", ""));
        }
        Ok(())
    }

    /// `iptables -N`: creates a user chain if it does not exist; true if it existed.
    pub fn ensure_chain(&mut self, table: &str, chain: &str) -> bool {
        let t = self
            .tables
            .entry(table.to_owned())
            .or_insert_with(|| TableModel::new(table));
        if t.chains.contains_key(chain) {
            return true;
        }
        t.chains.insert(chain.to_owned(), Chain::default());
        false
    }

    /// Upstream `EnsureRule(Prepend, ...)` for a jump rule: creates the target chain and
    /// inserts the rule first in its built-in chain unless an equal rule is there.
    pub fn ensure_jump(&mut self, jump: &JumpRule) -> Result<()> {
        self.ensure_chain(jump.table.as_str(), jump.to);
        self.ensure_rule(jump.table.as_str(), jump.from, &jump.args())?;
        Ok(())
    }

    /// `iptables -C` then `-I CHAIN 1`: prepends the rule (given as iptables arguments)
    /// unless an equal one exists; true if it existed.
    pub fn ensure_rule(&mut self, table: &str, chain: &str, args: &[String]) -> Result<bool> {
        let r = rule::parse_rule(args).map_err(|e| parse_err(0, e, &args.join(" ")))?;
        let t = self
            .tables
            .entry(table.to_owned())
            .or_insert_with(|| TableModel::new(table));
        if let Target::Jump(j) = &r.target
            && !t.chains.contains_key(j)
        {
            return Err(Error::NoSuchChain {
                table: table.to_owned(),
                chain: j.clone(),
            });
        }
        let c = t.chains.get_mut(chain).ok_or_else(|| Error::NoSuchChain {
            table: table.to_owned(),
            chain: chain.to_owned(),
        })?;
        if c.rules.contains(&r) {
            return Ok(true);
        }
        c.rules.insert(0, r);
        Ok(false)
    }

    /// `iptables -D` of a rule given as arguments; false if there was no such rule or chain.
    pub fn delete_rule(&mut self, table: &str, chain: &str, args: &[String]) -> Result<bool> {
        let r = rule::parse_rule(args).map_err(|e| parse_err(0, e, &args.join(" ")))?;
        let Some(c) = self
            .tables
            .get_mut(table)
            .and_then(|t| t.chains.get_mut(chain))
        else {
            return Ok(false);
        };
        match c.rules.iter().position(|x| *x == r) {
            Some(i) => {
                c.rules.remove(i);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `iptables-save -t TABLE`-like text of one table (empty if the table is unknown).
    pub fn save_table(&self, table: &str) -> String {
        let Some(t) = self.tables.get(table) else {
            return String::new();
        };
        let one = Ruleset {
            tables: std::iter::once((table.to_owned(), t.clone())).collect(),
        };
        one.to_string()
    }

    /// A copy where the order of per-service rules in the shared chains (which match
    /// distinct destinations, so their order does not matter) is normalised: sorted,
    /// with the jumps to KUBE-NODEPORTS kept last in their original order.
    pub fn canonical(&self) -> Ruleset {
        let mut r = self.clone();
        for (tname, t) in &mut r.tables {
            for (cname, c) in &mut t.chains {
                let shared = matches!(
                    (tname.as_str(), cname.as_str()),
                    ("nat" | "filter", KUBE_SERVICES | KUBE_NODEPORTS)
                        | ("filter", KUBE_EXTERNAL_SERVICES | KUBE_PROXY_FIREWALL)
                );
                if !shared {
                    continue;
                }
                let (mut tail, mut head): (Vec<Rule>, Vec<Rule>) = c
                    .rules
                    .drain(..)
                    .partition(|r| matches!(&r.target, Target::Jump(j) if j == KUBE_NODEPORTS));
                head.sort_by(|a, b| a.text.cmp(&b.text));
                head.append(&mut tail);
                c.rules = head;
            }
        }
        r
    }

    /// Number of rules in a table.
    pub fn rule_count(&self, table: &str) -> usize {
        self.tables
            .get(table)
            .map_or(0, |t| t.chains.values().map(|c| c.rules.len()).sum())
    }
}

fn apply_command(tname: &str, t: &mut TableModel, words: &[String]) -> Result<()> {
    let err = |reason: String| Error::Parse {
        line: 0,
        reason,
        text: String::new(),
    };
    let (cmd, rest) = words
        .split_first()
        .ok_or_else(|| err("empty line".into()))?;
    let (chain, rest) = rest
        .split_first()
        .ok_or_else(|| err(format!("{cmd} needs a chain")))?;
    let no_chain = || Error::NoSuchChain {
        table: tname.to_owned(),
        chain: chain.clone(),
    };
    match cmd.as_str() {
        "-A" | "-I" => {
            let (pos, spec) = match (cmd.as_str(), rest.first()) {
                ("-I", Some(p)) if p.parse::<usize>().is_ok() => {
                    (p.parse::<usize>().unwrap_or(1), &rest[1..])
                }
                ("-I", _) => (1, rest),
                _ => (usize::MAX, rest),
            };
            let r = rule::parse_rule(spec).map_err(err)?;
            if let Target::Jump(j) = &r.target
                && !t.chains.contains_key(j)
            {
                return Err(Error::NoSuchChain {
                    table: tname.to_owned(),
                    chain: j.clone(),
                });
            }
            let c = t.chains.get_mut(chain).ok_or_else(no_chain)?;
            if pos == usize::MAX {
                c.rules.push(r);
            } else {
                if pos == 0 || pos > c.rules.len() + 1 {
                    return Err(err(format!("index {pos} out of range")));
                }
                c.rules.insert(pos - 1, r);
            }
        }
        "-D" => {
            let r = rule::parse_rule(rest).map_err(err)?;
            let c = t.chains.get_mut(chain).ok_or_else(no_chain)?;
            let i = c
                .rules
                .iter()
                .position(|x| *x == r)
                .ok_or_else(|| Error::NoSuchRule {
                    table: tname.to_owned(),
                    chain: chain.clone(),
                    rule: r.text.clone(),
                })?;
            c.rules.remove(i);
        }
        "-X" => {
            if !rest.is_empty() {
                return Err(err("-X takes one chain".into()));
            }
            let c = t.chains.get(chain).ok_or_else(no_chain)?;
            if c.policy.is_some() || !c.rules.is_empty() || t.referenced(chain) {
                return Err(Error::ChainBusy {
                    table: tname.to_owned(),
                    chain: chain.clone(),
                });
            }
            t.chains.remove(chain);
        }
        other => return Err(err(format!("unsupported command {other:?}"))),
    }
    Ok(())
}

impl fmt::Display for Ruleset {
    /// `iptables-save`-like text: tables, chain lines, then rules.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, t) in &self.tables {
            writeln!(f, "*{name}")?;
            for (cname, c) in &t.chains {
                writeln!(f, ":{cname} {} [0:0]", c.policy.as_deref().unwrap_or("-"))?;
            }
            for (cname, c) in &t.chains {
                for r in &c.rules {
                    writeln!(f, "-A {cname} {r}")?;
                }
            }
            writeln!(f, "COMMIT")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
        -A KUBE-SERVICES -d 10.0.0.1 -j KUBE-SVC-A\n-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
        -A KUBE-SVC-A -j DNAT --to-destination 10.1.0.1:80\nCOMMIT\n";

    #[test]
    fn noflush_restore_edits_in_place() {
        let mut r = Ruleset::parse(BASE).unwrap();
        r.restore("*nat\n:KUBE-SVC-A - [0:0]\n-D KUBE-SERVICES -d 10.0.0.1 -j KUBE-SVC-A\n-X KUBE-SVC-A\nCOMMIT\n", true)
            .unwrap();
        assert!(r.chain("nat", "KUBE-SVC-A").is_none());
        assert_eq!(r.chain("nat", KUBE_SERVICES).unwrap().rules.len(), 1);
    }

    #[test]
    fn failed_table_is_left_unchanged() {
        let mut r = Ruleset::parse(BASE).unwrap();
        let before = r.clone();
        let e = r
            .restore(
                "*nat\n-D KUBE-SERVICES -d 10.9.9.9 -j KUBE-SVC-A\nCOMMIT\n",
                true,
            )
            .unwrap_err();
        assert!(matches!(e, Error::NoSuchRule { .. }), "{e}");
        assert_eq!(r, before);
        let e = r
            .restore("*nat\n-X KUBE-SVC-A\nCOMMIT\n", true)
            .unwrap_err();
        assert!(matches!(e, Error::ChainBusy { .. }), "{e}");
        assert!(
            r.restore("*nat\n-A KUBE-SERVICES -j KUBE-NOPE\nCOMMIT\n", true)
                .is_err()
        );
        assert_eq!(r, before);
    }

    #[test]
    fn canonical_keeps_nodeport_jump_last() {
        let mut r = Ruleset::parse(BASE).unwrap();
        r.restore(
            "*nat\n-I KUBE-SERVICES 1 -d 10.0.0.2 -j KUBE-SVC-A\nCOMMIT\n",
            true,
        )
        .unwrap();
        let c = r.canonical();
        let rules = &c.chain("nat", KUBE_SERVICES).unwrap().rules;
        assert_eq!(
            rules.last().unwrap().target,
            Target::Jump(KUBE_NODEPORTS.into())
        );
        assert_eq!(rules[0].text, "-d 10.0.0.1 -j KUBE-SVC-A");
    }
}
