//! IPv4 routes, with optional lightweight-tunnel encapsulation (`encap ip id .. dst .. key`).

use super::{Netlink, NetlinkError, k};
use crate::kernel::model::Route;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{
    RouteFlags, RouteIpTunnel, RouteIpTunnelFlags, RouteMessage, RouteProtocol, RouteScope,
};
use std::net::Ipv4Addr;

/// How a route is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteAdd {
    /// Fail with EEXIST when the table has a route to the same destination.
    Create,
    /// Replace a route to the same destination (only for one already known to be ours).
    Replace,
}

impl Netlink {
    fn route_message(&self, r: &Route) -> Result<RouteMessage, NetlinkError> {
        let idx = self.link_index(&r.dev)?;
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(r.table)
            .destination_prefix(r.dst.addr(), r.dst.prefix_len())
            .output_interface(idx)
            .protocol(RouteProtocol::from(r.proto));
        match r.via {
            Some(v) if r.onlink => b = b.gateway(v).onlink(),
            Some(v) => b = b.gateway(v),
            None => b = b.scope(RouteScope::Link),
        }
        if let Some(e) = &r.encap {
            b = b.encap_ip(vec![
                RouteIpTunnel::Id(u64::from(e.id)),
                RouteIpTunnel::Destination(e.dst),
                RouteIpTunnel::Flags(RouteIpTunnelFlags::Key),
            ]);
        }
        let mut m = b.build();
        if r.onlink {
            m.header.flags |= RouteFlags::Onlink;
        }
        Ok(m)
    }

    pub fn route_add(&self, r: &Route, how: RouteAdd) -> Result<(), NetlinkError> {
        let msg = self.route_message(r)?;
        let h = self.handle.clone();
        let what = format!("add {r}");
        self.run(async move {
            let req = h.route().add(msg);
            let req = match how {
                RouteAdd::Create => req,
                RouteAdd::Replace => req.replace(),
            };
            req.execute().await.map_err(k(what))
        })
    }

    pub fn route_delete(&self, r: &Route) -> Result<(), NetlinkError> {
        let msg = self.route_message(r)?;
        let h = self.handle.clone();
        let what = format!("delete {r}");
        self.run(async move { h.route().del(msg).execute().await.map_err(k(what)) })
    }
}
