//! `kproxy trace`: where one packet goes through the iptables rules a node would
//! program, from Kubernetes objects in files (the map is built as `kproxy plan` builds
//! it, the rules are what a full sync loads, plus the jumps from the built-in chains).
//!
//! Prints every possible outcome with its probability: the endpoint it is DNATed to,
//! whether it is masqueraded, or the DROP/REJECT, each with the chain path and the
//! deciding rule. Input problems are reported as by `plan`, and make the exit status 2.

use std::io::Write as _;
use std::process::ExitCode;

use kproxy_iptables::Packet;

use crate::cli::TraceArgs;
use crate::error::{Error, Result};
use crate::plan::Input;

/// Runs `kproxy trace`.
///
/// # Errors
/// A bad config file, an unknown node name, or rules the tracer cannot follow.
pub fn run(args: &TraceArgs) -> Result<ExitCode> {
    let input = Input::load(&args.input)?;
    let packet = Packet {
        protocol: args.proto.into(),
        src: args.src,
        dst: args.dst,
        dport: args.dport,
        in_iface: args.in_iface.clone(),
        src_local: args.src_local,
    };
    let result = kproxy_iptables::trace(&input.map, &input.node_facts(), &input.cfg, &packet)
        .map_err(|e| Error::Trace(Box::new(e)))?;
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "{result}").and_then(|()| stdout.flush());
    Ok(if input.loaded.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
