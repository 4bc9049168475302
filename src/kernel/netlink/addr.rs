//! IPv4 addresses, always `noprefixroute`: tollgate installs the routes it wants itself.

use super::{Netlink, NetlinkError, k};
use crate::kernel::model::Address;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use std::net::{IpAddr, Ipv4Addr};

impl Netlink {
    pub fn addr_add(&self, a: &Address) -> Result<(), NetlinkError> {
        let idx = self.link_index(&a.dev)?;
        let h = self.handle.clone();
        let what = format!("add {a}");
        let (ip, prefix) = (a.addr, a.prefix);
        self.run(async move {
            let mut req = h.address().add(idx, IpAddr::V4(ip), prefix);
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
            req.execute().await.map_err(k(what))
        })
    }

    pub fn addr_delete(&self, a: &Address) -> Result<(), NetlinkError> {
        let idx = self.link_index(&a.dev)?;
        let h = self.handle.clone();
        let what = format!("delete {a}");
        let (ip, prefix) = (a.addr, a.prefix);
        self.run(async move {
            let msg = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
                .index(idx)
                .address(ip, prefix)
                .build();
            h.address().del(msg).execute().await.map_err(k(what))
        })
    }
}
