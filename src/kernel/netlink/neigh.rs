//! Permanent IPv4 neighbour entries.

use super::{Netlink, NetlinkError, k};
use crate::kernel::model::Neigh;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use std::net::IpAddr;

impl Netlink {
    pub fn neigh_add(&self, n: &Neigh) -> Result<(), NetlinkError> {
        let idx = self.link_index(&n.dev)?;
        let h = self.handle.clone();
        let what = format!("add {n}");
        let (ip, mac) = (n.ip, n.mac);
        self.run(async move {
            h.neighbours()
                .add(idx, IpAddr::V4(ip))
                .link_layer_address(&mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(k(what))
        })
    }

    pub fn neigh_delete(&self, n: &Neigh) -> Result<(), NetlinkError> {
        let idx = self.link_index(&n.dev)?;
        let h = self.handle.clone();
        let what = format!("delete {n}");
        let ip = n.ip;
        self.run(async move {
            let mut msg = NeighbourMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.ifindex = idx;
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
            h.neighbours().del(msg).execute().await.map_err(k(what))
        })
    }
}
