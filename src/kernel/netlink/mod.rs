//! rtnetlink, in one place: one connection on one single-threaded runtime, a [`Snapshot`] of
//! every object in the namespace decoded by [`decode`], and one builder per kernel object
//! (`link`, `addr`, `route`, `rule`, `neigh`), named as the kernel names them.
//!
//! rtnetlink is async only; tollgate's control paths are sequential, so each call blocks on the
//! private runtime. Both the gateway and the shaper's route mode go through here.

mod addr;
pub mod decode;
mod link;
mod neigh;
mod route;

pub use route::RouteAdd;
mod rule;

use crate::kernel::model::{Address, Neigh, Route, Rule};
use decode::LinkState;
use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::{Handle, IpVersion};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("{what}: {err}")]
    Kernel { what: String, err: rtnetlink::Error },
    #[error("device {0:?} does not exist")]
    NoDevice(String),
    #[error("{what}: {err}")]
    Setting { what: String, err: std::io::Error },
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel {
                err: rtnetlink::Error::NetlinkError(m),
                ..
            } => m.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

/// Every link, decoded (one RTM_GETLINK dump).
async fn dump_links(h: &rtnetlink::Handle) -> Result<Vec<LinkState>, NetlinkError> {
    let links: Vec<_> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(k("list links"))?;
    Ok(links.iter().filter_map(decode::link).collect())
}

pub(crate) fn k(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |err| NetlinkError::Kernel { what, err }
}

/// Every object of the namespace that the model can describe, decoded.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub links: Vec<LinkState>,
    /// IPv4 addresses.
    pub addresses: Vec<Address>,
    /// IPv4 routes of every table (see [`decode::route`] for what is left out).
    pub routes: Vec<Route>,
    /// IPv4 policy rules (see [`decode::rule`] for what is left out).
    pub rules: Vec<Rule>,
    /// Permanent IPv4 neighbours.
    pub neighs: Vec<Neigh>,
}

impl Snapshot {
    /// Index -> name of every link.
    pub fn names(&self) -> BTreeMap<u32, String> {
        self.links
            .iter()
            .map(|l| (l.index, l.name.clone()))
            .collect()
    }

    pub fn link(&self, name: &str) -> Option<&LinkState> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// A netlink connection on its own single-threaded runtime.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
    /// Device name -> index, learned as the builders look them up (one request per device,
    /// not one per object on it); forgotten when this connection deletes the device.
    indexes: std::cell::RefCell<std::collections::HashMap<String, u32>>,
}

impl Netlink {
    pub fn new() -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetlinkError::Socket)?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
            tokio::spawn(conn);
            Ok::<_, NetlinkError>(handle)
        })?;
        Ok(Netlink {
            rt,
            handle,
            indexes: Default::default(),
        })
    }

    /// A connection to named namespace `netns`, usable from any thread: a netlink socket
    /// belongs to the namespace it was opened in, so it is opened by a thread that joined
    /// `netns`, and every request on it then reads and changes that namespace.
    pub fn new_in(netns: &str) -> Result<Netlink, NetlinkError> {
        crate::kernel::netns::run_in(netns, Netlink::new).map_err(|e| {
            NetlinkError::Socket(std::io::Error::other(format!("netlink socket in {e}")))
        })?
    }

    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// Every link of the namespace (one dump, no addresses or routes).
    pub fn links(&self) -> Result<Vec<LinkState>, NetlinkError> {
        let h = self.handle.clone();
        self.run(async move { dump_links(&h).await })
    }

    /// Every link, IPv4 address, route, rule and permanent neighbour, decoded.
    pub fn snapshot(&self) -> Result<Snapshot, NetlinkError> {
        let h = self.handle.clone();
        self.run(async move {
            let mut s = Snapshot {
                links: dump_links(&h).await?,
                ..Snapshot::default()
            };
            let names = s.names();
            let addrs: Vec<_> = h
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(k("list addresses"))?;
            s.addresses = addrs
                .iter()
                .filter_map(|a| decode::address(a, &names))
                .collect();
            let mut q = RouteMessage::default();
            q.header.address_family = AddressFamily::Inet;
            let routes: Vec<_> = h
                .route()
                .get(q)
                .execute()
                .try_collect()
                .await
                .map_err(k("list routes"))?;
            s.routes = routes
                .iter()
                .filter_map(|r| decode::route(r, &names))
                .collect();
            let rules: Vec<_> = h
                .rule()
                .get(IpVersion::V4)
                .execute()
                .try_collect()
                .await
                .map_err(k("list rules"))?;
            s.rules = rules.iter().filter_map(decode::rule).collect();
            let neighs: Vec<_> = h
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Inet)
                .execute()
                .try_collect()
                .await
                .map_err(k("list neighbours"))?;
            s.neighs = neighs
                .iter()
                .filter_map(|n| decode::neigh(n, &names))
                .collect();
            Ok(s)
        })
    }
}
