//! An async IPVS client over generic netlink ([`IpvsHandle`]), behind the [`IpvsOps`]
//! trait so the proxier can run against an in-memory fake
//! (`exec::FakeIpvs`, feature `testing`).
//!
//! Upstream kube-proxy does the same through moby/ipvs
//! (`pkg/proxy/ipvs/util/ipvs_linux.go`): one handle, one request at a time. Ours
//! also has a second, blocking socket ([`pipeline`]) for the bulk paths:
//! [`IpvsOps::apply_ops`] sends hundreds of requests per system call and
//! [`IpvsOps::list_destinations_of`] dumps many services without a task switch per
//! reply.

pub mod pipeline;

use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;

use crate::error::{Error, Result};
use crate::netlink::{Destination, IpvsAttr, IpvsCmd, IpvsInfo, IpvsMessage, Service};
use crate::reconcile::Op;
use pipeline::Pipeline;

/// The IPVS operations the proxier needs. Every method talks to the kernel once (or
/// dumps once); none retries.
#[async_trait::async_trait]
pub trait IpvsOps: Send + Sync {
    /// Every virtual service, both families (`ipvsadm -Ln`).
    async fn list_services(&self) -> Result<Vec<Service>>;
    /// Adds a virtual service (`EEXIST` is an error).
    async fn add_service(&self, svc: &Service) -> Result<()>;
    /// Changes a virtual service's scheduler, flags, timeout or netmask.
    async fn update_service(&self, svc: &Service) -> Result<()>;
    /// Deletes a virtual service and its destinations.
    async fn delete_service(&self, svc: &Service) -> Result<()>;
    /// The destinations of a service, with connection counters.
    async fn list_destinations(&self, svc: &Service) -> Result<Vec<Destination>>;
    /// Adds a destination.
    async fn add_destination(&self, svc: &Service, dest: &Destination) -> Result<()>;
    /// Changes a destination's weight, forwarding method or thresholds.
    async fn update_destination(&self, svc: &Service, dest: &Destination) -> Result<()>;
    /// Deletes a destination.
    async fn delete_destination(&self, svc: &Service, dest: &Destination) -> Result<()>;
    /// Deletes every service (`ipvsadm -C`).
    async fn flush(&self) -> Result<()>;
    /// Sets the non-zero timeouts of `t` (`ipvsadm --set`).
    async fn set_timeouts(&self, t: &IpvsInfo) -> Result<()>;
    /// Reads the timeouts, version and connection table size.
    async fn info(&self) -> Result<IpvsInfo>;

    /// Runs `ops` in order and returns one result per op: a failed op does not stop
    /// the ones after it. The default runs them one at a time; [`IpvsHandle`]
    /// pipelines them.
    async fn apply_ops(&self, ops: &[Op]) -> Vec<Result<()>> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op {
                Op::AddService(s) => self.add_service(s).await,
                Op::UpdateService(s) => self.update_service(s).await,
                Op::DeleteService(s) => self.delete_service(s).await,
                Op::AddDest(s, d) => self.add_destination(s, d).await,
                Op::UpdateDest(s, d) => self.update_destination(s, d).await,
                Op::DeleteDest(s, d) => self.delete_destination(s, d).await,
            });
        }
        out
    }

    /// The destinations of each of `svcs`, in order (one dump each).
    async fn list_destinations_of(&self, svcs: &[Service]) -> Result<Vec<Vec<Destination>>> {
        let mut out = Vec::with_capacity(svcs.len());
        for s in svcs {
            out.push(self.list_destinations(s).await?);
        }
        Ok(out)
    }
}

/// The request that carries out `op`.
pub fn op_message(op: &Op) -> IpvsMessage {
    let (cmd, attrs) = match op {
        Op::AddService(s) => (IpvsCmd::NewService, vec![IpvsAttr::Service(s.to_attrs())]),
        Op::UpdateService(s) => (IpvsCmd::SetService, vec![IpvsAttr::Service(s.to_attrs())]),
        Op::DeleteService(s) => (IpvsCmd::DelService, vec![IpvsAttr::Service(s.id_attrs())]),
        Op::AddDest(s, d) => (
            IpvsCmd::NewDest,
            vec![
                IpvsAttr::Service(s.id_attrs()),
                IpvsAttr::Dest(d.to_attrs()),
            ],
        ),
        Op::UpdateDest(s, d) => (
            IpvsCmd::SetDest,
            vec![
                IpvsAttr::Service(s.id_attrs()),
                IpvsAttr::Dest(d.to_attrs()),
            ],
        ),
        Op::DeleteDest(s, d) => (
            IpvsCmd::DelDest,
            vec![
                IpvsAttr::Service(s.id_attrs()),
                IpvsAttr::Dest(d.id_attrs()),
            ],
        ),
    };
    IpvsMessage { cmd, attrs }
}

fn destinations_of(svc: &Service, replies: Vec<IpvsMessage>) -> Result<Vec<Destination>> {
    let mut out = Vec::new();
    for m in replies {
        for a in m.attrs {
            if let IpvsAttr::Dest(attrs) = a {
                out.push(Destination::from_attrs(&attrs, svc.family)?);
            }
        }
    }
    Ok(out)
}

fn pipeline_err(e: &std::io::Error) -> Error {
    Error::Netlink {
        op: "pipelined request",
        source: Box::new(std::io::Error::new(e.kind(), e.to_string())),
    }
}

/// A generic netlink connection to the kernel's `IPVS` family. Cheap to clone; the
/// connection task runs on the tokio runtime it was created in.
#[derive(Clone, Debug)]
pub struct IpvsHandle {
    genl: genetlink::GenetlinkHandle,
    pipe: Arc<Mutex<Pipeline>>,
}

impl IpvsHandle {
    /// Opens a generic netlink socket and spawns its connection task; the family id is
    /// resolved on the first request. Must be called inside a tokio runtime.
    pub fn new() -> Result<IpvsHandle> {
        let (conn, genl, _) = genetlink::new_connection().map_err(|e| Error::Netlink {
            op: "open socket",
            source: Box::new(e),
        })?;
        tokio::spawn(conn);
        let pipe = Pipeline::open(netlink_sys::constants::NETLINK_GENERIC).map_err(|e| {
            Error::Netlink {
                op: "open socket",
                source: Box::new(e),
            }
        })?;
        Ok(IpvsHandle {
            genl,
            pipe: Arc::new(Mutex::new(pipe)),
        })
    }

    /// Runs `f` on the pipeline socket in a blocking thread.
    async fn with_pipe<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Pipeline) -> T + Send + 'static,
    ) -> Result<T> {
        let pipe = self.pipe.clone();
        tokio::task::spawn_blocking(move || {
            f(&mut pipe.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await
        .map_err(|e| Error::Netlink {
            op: "pipelined request",
            source: Box::new(e),
        })
    }

    fn genl_message(family: u16, msg: IpvsMessage) -> NetlinkMessage<GenlMessage<IpvsMessage>> {
        let mut g = GenlMessage::from_payload(msg);
        g.set_resolved_family_id(family);
        NetlinkMessage::new(NetlinkHeader::default(), g.into())
    }

    /// Resolves the `IPVS` family id: fails when the kernel has no IPVS (`ip_vs` not
    /// loaded), which is upstream's first start-up probe.
    pub async fn probe(&self) -> Result<u16> {
        self.genl
            .resolve_family::<IpvsMessage>()
            .await
            .map(|f| f.id)
            .map_err(|e| Error::Netlink {
                op: "resolve family IPVS",
                source: Box::new(e),
            })
    }

    /// Sends one request and collects the replies. `dump` adds `NLM_F_DUMP`. A kernel
    /// error becomes [`Error::Kernel`] naming `op`.
    pub async fn request(
        &self,
        msg: IpvsMessage,
        dump: bool,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<IpvsMessage>> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | if dump { NLM_F_DUMP } else { 0 };
        let nl = NetlinkMessage::new(header, GenlMessage::from_payload(msg).into());
        let mut genl = self.genl.clone();
        let mut replies = genl.request(nl).await.map_err(|e| Error::Netlink {
            op: "request",
            source: Box::new(e),
        })?;
        let mut out = Vec::new();
        let mut failure = None;
        while let Some(reply) = replies.next().await {
            match reply?.payload {
                NetlinkPayload::InnerMessage(g) => out.push(g.payload),
                NetlinkPayload::Error(e) if e.code.is_some() => failure = Some(e.to_io()),
                _ => {}
            }
        }
        match failure {
            Some(source) => Err(Error::Kernel { op: op(), source }),
            None => Ok(out),
        }
    }

    async fn command(
        &self,
        cmd: IpvsCmd,
        attrs: Vec<IpvsAttr>,
        op: impl FnOnce() -> String,
    ) -> Result<()> {
        self.request(IpvsMessage { cmd, attrs }, false, op)
            .await
            .map(drop)
    }
}

#[async_trait::async_trait]
impl IpvsOps for IpvsHandle {
    async fn list_services(&self) -> Result<Vec<Service>> {
        let replies = self
            .request(
                IpvsMessage {
                    cmd: IpvsCmd::GetService,
                    attrs: vec![],
                },
                true,
                || "list services".into(),
            )
            .await?;
        let mut out = Vec::new();
        for m in replies {
            for a in m.attrs {
                if let IpvsAttr::Service(attrs) = a {
                    out.push(Service::from_attrs(&attrs)?);
                }
            }
        }
        Ok(out)
    }

    async fn add_service(&self, svc: &Service) -> Result<()> {
        self.command(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(svc.to_attrs())],
            || format!("add service {}", svc.key()),
        )
        .await
    }

    async fn update_service(&self, svc: &Service) -> Result<()> {
        self.command(
            IpvsCmd::SetService,
            vec![IpvsAttr::Service(svc.to_attrs())],
            || format!("update service {}", svc.key()),
        )
        .await
    }

    async fn delete_service(&self, svc: &Service) -> Result<()> {
        self.command(
            IpvsCmd::DelService,
            vec![IpvsAttr::Service(svc.id_attrs())],
            || format!("delete service {}", svc.key()),
        )
        .await
    }

    async fn list_destinations(&self, svc: &Service) -> Result<Vec<Destination>> {
        let msg = IpvsMessage {
            cmd: IpvsCmd::GetDest,
            attrs: vec![IpvsAttr::Service(svc.id_attrs())],
        };
        let replies = self
            .request(msg, true, || format!("list destinations of {}", svc.key()))
            .await?;
        destinations_of(svc, replies)
    }

    async fn apply_ops(&self, ops: &[Op]) -> Vec<Result<()>> {
        if ops.is_empty() {
            return Vec::new();
        }
        let family = match self.probe().await {
            Ok(f) => f,
            Err(e) => {
                let msg = e.to_string();
                return ops
                    .iter()
                    .map(|_| {
                        Err(Error::Netlink {
                            op: "resolve family IPVS",
                            source: msg.clone().into(),
                        })
                    })
                    .collect();
            }
        };
        let mut msgs: Vec<_> = ops
            .iter()
            .map(|op| Self::genl_message(family, op_message(op)))
            .collect();
        let n = msgs.len();
        let outcomes = self.with_pipe(move |p| p.run(&mut msgs)).await;
        match outcomes {
            Ok(Ok(outcomes)) if outcomes.len() == n => ops
                .iter()
                .zip(outcomes)
                .map(|(op, o)| match o {
                    None => Ok(()),
                    Some(errno) => Err(Error::Kernel {
                        op: op.describe(),
                        source: std::io::Error::from_raw_os_error(errno),
                    }),
                })
                .collect(),
            Ok(Ok(_)) => ops
                .iter()
                .map(|_| Err(pipeline_err(&std::io::Error::other("reply count"))))
                .collect(),
            Ok(Err(e)) => ops.iter().map(|_| Err(pipeline_err(&e))).collect(),
            Err(e) => {
                let e = std::io::Error::other(e.to_string());
                ops.iter().map(|_| Err(pipeline_err(&e))).collect()
            }
        }
    }

    async fn list_destinations_of(&self, svcs: &[Service]) -> Result<Vec<Vec<Destination>>> {
        if svcs.is_empty() {
            return Ok(Vec::new());
        }
        let family = self.probe().await?;
        let svcs_owned = svcs.to_vec();
        let replies = self
            .with_pipe(move |p| {
                let mut out = Vec::with_capacity(svcs_owned.len());
                for s in &svcs_owned {
                    let msg = IpvsMessage {
                        cmd: IpvsCmd::GetDest,
                        attrs: vec![IpvsAttr::Service(s.id_attrs())],
                    };
                    match p.dump(Self::genl_message(family, msg)) {
                        Ok(Ok(ms)) => out.push(Ok(ms)),
                        Ok(Err(errno)) => {
                            out.push(Err(Error::Kernel {
                                op: format!("list destinations of {}", s.key()),
                                source: std::io::Error::from_raw_os_error(errno),
                            }));
                            break;
                        }
                        Err(e) => {
                            out.push(Err(pipeline_err(&e)));
                            break;
                        }
                    }
                }
                out
            })
            .await?;
        let mut out = Vec::with_capacity(svcs.len());
        for (svc, r) in svcs.iter().zip(replies) {
            let msgs = r?
                .into_iter()
                .filter_map(|m| match m.payload {
                    NetlinkPayload::InnerMessage(g) => Some(g.payload),
                    _ => None,
                })
                .collect();
            out.push(destinations_of(svc, msgs)?);
        }
        if out.len() != svcs.len() {
            return Err(pipeline_err(&std::io::Error::other("dump ended early")));
        }
        Ok(out)
    }

    async fn add_destination(&self, svc: &Service, dest: &Destination) -> Result<()> {
        let attrs = vec![
            IpvsAttr::Service(svc.id_attrs()),
            IpvsAttr::Dest(dest.to_attrs()),
        ];
        self.command(IpvsCmd::NewDest, attrs, || {
            format!("add destination {} to {}", dest.socket_addr(), svc.key())
        })
        .await
    }

    async fn update_destination(&self, svc: &Service, dest: &Destination) -> Result<()> {
        let attrs = vec![
            IpvsAttr::Service(svc.id_attrs()),
            IpvsAttr::Dest(dest.to_attrs()),
        ];
        self.command(IpvsCmd::SetDest, attrs, || {
            format!("update destination {} of {}", dest.socket_addr(), svc.key())
        })
        .await
    }

    async fn delete_destination(&self, svc: &Service, dest: &Destination) -> Result<()> {
        let attrs = vec![
            IpvsAttr::Service(svc.id_attrs()),
            IpvsAttr::Dest(dest.id_attrs()),
        ];
        self.command(IpvsCmd::DelDest, attrs, || {
            format!("delete destination {} of {}", dest.socket_addr(), svc.key())
        })
        .await
    }

    async fn flush(&self) -> Result<()> {
        self.command(IpvsCmd::Flush, vec![], || "flush".into())
            .await
    }

    async fn set_timeouts(&self, t: &IpvsInfo) -> Result<()> {
        let attrs = t.timeout_attrs();
        if attrs.is_empty() {
            return Ok(());
        }
        self.command(IpvsCmd::SetConfig, attrs, || "set timeouts".into())
            .await
    }

    async fn info(&self) -> Result<IpvsInfo> {
        let mut info = IpvsInfo::default();
        for cmd in [IpvsCmd::GetConfig, IpvsCmd::GetInfo] {
            for m in self
                .request(IpvsMessage { cmd, attrs: vec![] }, false, || {
                    format!("{cmd}")
                })
                .await?
            {
                info.absorb(&m);
            }
        }
        Ok(info)
    }
}
