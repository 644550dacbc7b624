//! The host executor: rtnetlink for the dummy link, the ipset / iptables / conntrack
//! binaries for the rest (upstream shells out to the same tools).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use futures::TryStreamExt;
use kproxy_core::StaleFlow;
use kproxy_core::model::IpFamily;
use rtnetlink::AddressMessageBuilder;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NetlinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Executor, conntrack_args};
use crate::error::{Error, Result};
use crate::handle::pipeline::Pipeline;

/// Runs everything on this host (or the network namespace of the calling thread).
#[derive(Debug, Clone)]
pub struct RealExecutor {
    rt: rtnetlink::Handle,
    /// The last link looked up by name: kube-ipvs0 is asked for thousands of times a
    /// sync. Dropped when the link is created or deleted, or an address add fails.
    link_cache: Arc<Mutex<Option<(String, u32)>>>,
    /// A blocking rtnetlink socket for address batches (opened with the handle, so in
    /// the same network namespace).
    pipe: Arc<Mutex<Pipeline>>,
}

impl RealExecutor {
    /// Opens an rtnetlink socket and spawns its connection task (inside a tokio runtime).
    pub fn new() -> Result<RealExecutor> {
        let (conn, rt, _) = rtnetlink::new_connection().map_err(|e| Error::Link {
            op: "open rtnetlink socket".into(),
            source: Box::new(e),
        })?;
        tokio::spawn(conn);
        let pipe =
            Pipeline::open(netlink_sys::constants::NETLINK_ROUTE).map_err(|e| Error::Link {
                op: "open rtnetlink socket".into(),
                source: Box::new(e),
            })?;
        Ok(RealExecutor {
            rt,
            link_cache: Default::default(),
            pipe: Arc::new(Mutex::new(pipe)),
        })
    }

    /// Sends one `RTM_NEWADDR` (`add`) or `RTM_DELADDR` per address in pipelined
    /// chunks; errnos in `ok` count as success.
    async fn address_batch(&self, name: &str, ips: &[IpAddr], add: bool) -> Result<()> {
        let verb = if add { "add" } else { "delete" };
        let idx = match self.cached(name) {
            Some(i) => i,
            None => match self.link_index(name).await? {
                Some(i) => {
                    self.set_cache(Some((name.to_owned(), i)));
                    i
                }
                None if add => {
                    return Err(Error::Link {
                        op: format!("add addresses to {name}"),
                        source: "no such link".into(),
                    });
                }
                None => return Ok(()),
            },
        };
        let mut msgs: Vec<NetlinkMessage<RouteNetlinkMessage>> = ips
            .iter()
            .map(|ip| {
                let a = match ip {
                    IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
                        .index(idx)
                        .address(*v4, 32)
                        .build(),
                    IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
                        .index(idx)
                        .address(*v6, 128)
                        .build(),
                };
                let mut m = NetlinkMessage::from(if add {
                    RouteNetlinkMessage::NewAddress(a)
                } else {
                    RouteNetlinkMessage::DelAddress(a)
                });
                if add {
                    m.header.flags = NLM_F_CREATE | NLM_F_EXCL;
                }
                m
            })
            .collect();
        let pipe = self.pipe.clone();
        let outcomes = tokio::task::spawn_blocking(move || {
            pipe.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .run(&mut msgs)
        })
        .await
        .map_err(|e| Error::Link {
            op: format!("{verb} addresses of {name}"),
            source: Box::new(e),
        })?
        .map_err(|e| Error::Link {
            op: format!("{verb} addresses of {name}"),
            source: Box::new(e),
        })?;
        // EEXIST on add; ENXIO, EADDRNOTAVAIL on delete: already as wanted.
        let fine: &[i32] = if add { &[17] } else { &[6, 99] };
        for (ip, o) in ips.iter().zip(outcomes) {
            if let Some(errno) = o.filter(|e| !fine.contains(e)) {
                self.set_cache(None);
                return Err(Error::Link {
                    op: format!("{verb} address {ip} on {name}"),
                    source: Box::new(std::io::Error::from_raw_os_error(errno)),
                });
            }
        }
        Ok(())
    }

    fn cached(&self, name: &str) -> Option<u32> {
        let c = self
            .link_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.as_ref().filter(|(n, _)| n == name).map(|(_, i)| *i)
    }

    fn set_cache(&self, v: Option<(String, u32)>) {
        *self
            .link_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = v;
    }

    async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        let mut links = self.rt.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(Some(l)) => Ok(Some(l.header.index)),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None), // ENODEV
            Err(e) => Err(Error::Link {
                op: format!("look up link {name}"),
                source: Box::new(e),
            }),
        }
    }
}

fn link_err(op: String) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |e| Error::Link {
        op,
        source: Box::new(e),
    }
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

async fn run(program: &str, args: &[String], stdin: Option<&str>) -> Result<std::process::Output> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: program.into(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|source| Error::Spawn {
                program: program.into(),
                source,
            })?;
        drop(pipe);
    }
    child
        .wait_with_output()
        .await
        .map_err(|source| Error::Spawn {
            program: program.into(),
            source,
        })
}

fn check(
    program: &str,
    args: &[String],
    out: std::process::Output,
) -> Result<std::process::Output> {
    if out.status.success() {
        return Ok(out);
    }
    Err(Error::Command {
        program: format!("{program} {}", args.join(" ")),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

fn iptables_bin(family: IpFamily, restore: bool) -> &'static str {
    match (family, restore) {
        (IpFamily::V4, false) => "iptables",
        (IpFamily::V6, false) => "ip6tables",
        (IpFamily::V4, true) => "iptables-restore",
        (IpFamily::V6, true) => "ip6tables-restore",
    }
}

#[async_trait::async_trait]
impl Executor for RealExecutor {
    async fn ensure_dummy(&self, name: &str) -> Result<()> {
        self.set_cache(None);
        if self.link_index(name).await?.is_none() {
            let msg = rtnetlink::LinkDummy::new(name).up().build();
            match self.rt.link().add(msg).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, 17) => {} // EEXIST: raced with another writer
                Err(e) => return Err(link_err(format!("create dummy link {name}"))(e)),
            }
        }
        let idx = self.link_index(name).await?.ok_or_else(|| Error::Link {
            op: format!("find link {name} after creating it"),
            source: "link vanished".into(),
        })?;
        let msg = rtnetlink::LinkUnspec::new_with_index(idx).up().build();
        self.rt
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(link_err(format!("set link {name} up")))
    }

    async fn delete_dummy(&self, name: &str) -> Result<()> {
        self.set_cache(None);
        let Some(idx) = self.link_index(name).await? else {
            return Ok(());
        };
        self.rt
            .link()
            .del(idx)
            .execute()
            .await
            .map_err(link_err(format!("delete link {name}")))
    }

    async fn list_addresses(&self, name: &str, family: IpFamily) -> Result<BTreeSet<IpAddr>> {
        let Some(idx) = self.link_index(name).await? else {
            return Ok(BTreeSet::new());
        };
        let mut out = BTreeSet::new();
        let mut addrs = self.rt.address().get().set_link_index_filter(idx).execute();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(link_err(format!("list addresses of {name}")))?
        {
            if msg.header.index != idx {
                continue;
            }
            for a in msg.attributes {
                if let AddressAttribute::Address(ip) = a
                    && IpFamily::of(&ip) == family
                {
                    out.insert(ip);
                }
            }
        }
        Ok(out)
    }

    async fn add_address(&self, name: &str, ip: IpAddr) -> Result<()> {
        let idx = match self.cached(name) {
            Some(i) => i,
            None => self.link_index(name).await?.ok_or_else(|| Error::Link {
                op: format!("add {ip} to {name}"),
                source: "no such link".into(),
            })?,
        };
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        match self.rt.address().add(idx, ip, prefix).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, 17) => Ok(()), // EEXIST
            Err(e) => {
                self.set_cache(None);
                Err(link_err(format!("add address {ip} to {name}"))(e))
            }
        }
    }

    async fn del_address(&self, name: &str, ip: IpAddr) -> Result<()> {
        let idx = match self.cached(name) {
            Some(i) => i,
            None => match self.link_index(name).await? {
                Some(i) => i,
                None => return Ok(()),
            },
        };
        let mut addrs = self
            .rt
            .address()
            .get()
            .set_link_index_filter(idx)
            .set_address_filter(ip)
            .execute();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(link_err(format!("find address {ip} on {name}")))?
        {
            if msg.header.index != idx {
                continue;
            }
            match self.rt.address().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, 6) || is_errno(&e, 99) => {} // ENXIO, EADDRNOTAVAIL
                Err(e) => return Err(link_err(format!("delete address {ip} from {name}"))(e)),
            }
        }
        Ok(())
    }

    async fn add_addresses(&self, name: &str, ips: &[IpAddr]) -> Result<()> {
        self.address_batch(name, ips, true).await
    }

    async fn del_addresses(&self, name: &str, ips: &[IpAddr]) -> Result<()> {
        self.address_batch(name, ips, false).await
    }

    async fn ipset_names(&self) -> Result<BTreeSet<String>> {
        let args = vec!["list".to_owned(), "-n".to_owned()];
        let out = check("ipset", &args, run("ipset", &args, None).await?)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect())
    }

    async fn ipset_restore(&self, text: &str) -> Result<()> {
        let args = vec!["restore".to_owned(), "-exist".to_owned()];
        check("ipset", &args, run("ipset", &args, Some(text)).await?).map(drop)
    }

    async fn restore_iptables(&self, family: IpFamily, text: &str) -> Result<()> {
        let bin = iptables_bin(family, true);
        let args: Vec<String> = ["--noflush", "--counters", "-w", "5"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        check(bin, &args, run(bin, &args, Some(text)).await?).map(drop)
    }

    async fn iptables(&self, family: IpFamily, args: &[String]) -> Result<bool> {
        let bin = iptables_bin(family, false);
        let mut full = vec!["-w".to_owned(), "5".to_owned()];
        full.extend_from_slice(args);
        Ok(run(bin, &full, None).await?.status.success())
    }

    async fn conntrack_delete(&self, flow: &StaleFlow) -> Result<()> {
        let args = conntrack_args(flow);
        let out = run("conntrack", &args, None).await?;
        // "0 flow entries have been deleted" exits 1: nothing to delete is fine.
        if out.status.success() || String::from_utf8_lossy(&out.stderr).contains("0 flow entries") {
            return Ok(());
        }
        check("conntrack", &args, out).map(drop)
    }

    async fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{key}");
        let io = |source| Error::Spawn {
            program: format!("write {path}"),
            source,
        };
        if tokio::fs::read_to_string(&path)
            .await
            .map(|v| v.trim() == value)
            .unwrap_or(false)
        {
            return Ok(());
        }
        tokio::fs::write(&path, value).await.map_err(io)
    }
}
