//! Links: create (VRF, VXLAN, gretap, veth), enslave, bring up, move to another namespace,
//! delete, find by name.

use super::{Netlink, NetlinkError, k};
use crate::kernel::model::{Link, LinkKind};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{
    GreIOFlags, InfoData, InfoVeth, LinkAttribute, LinkInfo, MacVlanMode,
};
use rtnetlink::{LinkGre, LinkMacVlan, LinkUnspec, LinkVeth, LinkVrf, LinkVxlan};
use std::os::fd::AsRawFd;

impl Netlink {
    /// The index of device `name`.
    pub fn link_index(&self, name: &str) -> Result<u32, NetlinkError> {
        if let Some(i) = self.indexes.borrow().get(name) {
            return Ok(*i);
        }
        let i = self.link_index_uncached(name)?;
        self.indexes.borrow_mut().insert(name.to_string(), i);
        Ok(i)
    }

    fn link_index_uncached(&self, name: &str) -> Result<u32, NetlinkError> {
        let h = self.handle.clone();
        let n = name.to_string();
        self.run(async move {
            let mut s = h.link().get().match_name(n).execute();
            match s.try_next().await {
                Ok(Some(l)) => Ok(Some(l.header.index)),
                Ok(None) => Ok(None),
                Err(rtnetlink::Error::NetlinkError(m))
                    if m.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
                {
                    Ok(None)
                }
                Err(e) => Err(k(format!("look up device {name}"))(e)),
            }
        })?
        .ok_or_else(|| NetlinkError::NoDevice(name.to_string()))
    }

    /// Creates `l` with its alias, enslaves it to its master and brings it up.
    pub fn link_create(&self, l: &Link) -> Result<(), NetlinkError> {
        self.link_add_down(l, None)?;
        self.link_finish(l, |_| Ok(()))
    }

    /// The first half of [`Netlink::link_create`]: creates `l` with its alias, down and
    /// enslaved to nothing (a down device receives nothing), at interface index `index` (None:
    /// the kernel's choice).
    pub fn link_add_down(&self, l: &Link, index: Option<u32>) -> Result<(), NetlinkError> {
        let mut msg = match &l.kind {
            LinkKind::Vrf { table } => LinkVrf::new(&l.name, *table).build(),
            LinkKind::Vxlan {
                vni,
                local,
                remote,
                port,
                underlay,
            } => {
                let dev = self.link_index(underlay)?;
                let mut b = LinkVxlan::new(&l.name, vni.unwrap_or(0))
                    .local(*local)
                    .port(*port)
                    .dev(dev);
                if let Some(r) = remote {
                    b = b.remote(*r);
                }
                if vni.is_none() {
                    b = b.collect_metadata(true);
                }
                b.learning(false).build()
            }
            LinkKind::Gretap { key, local, remote } => {
                let mut b = LinkGre::new_gretap(&l.name);
                if let Some(a) = local {
                    b = b.local(*a);
                }
                if let Some(a) = remote {
                    b = b.remote(*a);
                }
                match key {
                    Some(k) => {
                        b = b
                            .iflags(GreIOFlags::Key)
                            .oflags(GreIOFlags::Key)
                            .ikey(*k)
                            .okey(*k);
                    }
                    None => b = b.collect_metadata(true),
                }
                b.build()
            }
            // an `outside` macvlan is made by the gateway namespace's connection, then moved
            LinkKind::Macvlan { lower, mac, .. } => self.macvlan_message(&l.name, lower, *mac)?,
            // its two ends are in two namespaces: made by link_create_veth_into over there
            LinkKind::Veth { peer } => {
                return Err(NetlinkError::Setting {
                    what: format!("create {l}"),
                    err: std::io::Error::other(format!(
                        "a shard's veth is made from the gateway's namespace with its peer {peer}"
                    )),
                });
            }
        };
        if let Some(i) = index {
            msg.header.index = i;
        }
        self.link_add(msg, format!("create {l}"))?;
        // the kernel takes IFLA_IFALIAS only on a change, not at creation
        if let Err(e) = self.link_set_alias(&l.name, &l.alias()) {
            // not recognisable as ours: do not leave it behind
            let _ = self.link_delete(&l.name);
            return Err(e);
        }
        Ok(())
    }

    /// The second half of [`Netlink::link_create`]: enslaves `l` (made by
    /// [`Netlink::link_add_down`]) to its master, runs `before_up` (given the name: for
    /// settings that must hold from its first packet), brings it up.
    pub fn link_finish(
        &self,
        l: &Link,
        before_up: impl FnOnce(&str) -> std::io::Result<()>,
    ) -> Result<(), NetlinkError> {
        if let Some(m) = &l.master {
            self.link_set_master(&l.name, Some(m))?;
        }
        before_up(&l.name).map_err(|err| NetlinkError::Setting {
            what: format!("configure {}", l.name),
            err,
        })?;
        self.link_set_up(&l.name)
    }

    /// Creates a veth pair `name` / `peer` (down, no alias).
    pub fn link_create_veth(&self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        let msg = LinkVeth::new(name, peer).build();
        self.link_add(msg, format!("create veth {name} peer {peer}"))
    }

    /// Creates a veth pair `name` (here) / `peer` (in named namespace `netns`), both down, no
    /// alias: a link between this namespace and another.
    pub fn link_create_veth_into(
        &self,
        name: &str,
        peer: &str,
        netns: &str,
    ) -> Result<(), NetlinkError> {
        let ns = open_netns(netns)?;
        let mut msg = LinkVeth::new(name, peer).build();
        for a in &mut msg.attributes {
            if let LinkAttribute::LinkInfo(infos) = a {
                for i in infos {
                    if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = i {
                        p.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
                    }
                }
            }
        }
        // ns stays open until the kernel has answered
        let r = self.link_add(msg, format!("create veth {name} peer {peer} netns {netns}"));
        drop(ns);
        r
    }

    /// Moves device `name` into named namespace `netns`. It keeps its alias and settings but
    /// leaves its master and goes down; a macvlan keeps sending through its lower over here.
    pub fn link_set_netns(&self, name: &str, netns: &str) -> Result<(), NetlinkError> {
        let ns = open_netns(netns)?;
        let idx = self.link_index(name)?;
        let msg = LinkUnspec::new_with_index(idx)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let h = self.handle.clone();
        let what = format!("move {name} into netns {netns}");
        let r = self.run(async move { h.link().set(msg).execute().await.map_err(k(what)) });
        drop(ns);
        self.indexes.borrow_mut().remove(name);
        r
    }

    /// Creates a macvlan `name` on `lower` with address `mac` (down, no alias), at interface
    /// index `index` (None: the kernel's choice).
    pub fn link_create_macvlan(
        &self,
        name: &str,
        lower: &str,
        mac: [u8; 6],
        index: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let mut msg = self.macvlan_message(name, lower, mac)?;
        if let Some(i) = index {
            msg.header.index = i;
        }
        self.link_add(msg, format!("create macvlan {name} on {lower}"))
    }

    /// A private-mode macvlan `name` on `lower` with address `mac`.
    fn macvlan_message(
        &self,
        name: &str,
        lower: &str,
        mac: [u8; 6],
    ) -> Result<rtnetlink::packet_route::link::LinkMessage, NetlinkError> {
        Ok(
            LinkMacVlan::new(name, self.link_index(lower)?, MacVlanMode::Private)
                .address(mac.to_vec())
                .build(),
        )
    }

    /// Sends a link creation request; `what` names it in an error. A chosen index that was
    /// taken since it was chosen (EBUSY: someone else made a device meanwhile) falls back to
    /// the kernel's choice: the device still works, only its hash bucket is not ours to pick.
    fn link_add(
        &self,
        mut msg: rtnetlink::packet_route::link::LinkMessage,
        what: String,
    ) -> Result<(), NetlinkError> {
        let send = |msg: rtnetlink::packet_route::link::LinkMessage, what: String| {
            let h = self.handle.clone();
            self.run(async move { h.link().add(msg).execute().await.map_err(k(what)) })
        };
        let index = msg.header.index;
        match send(msg.clone(), what.clone()) {
            Err(e) if index != 0 && e.errno() == Some(libc::EBUSY) => {
                tracing::warn!("{what}: index {index} was taken meanwhile, the kernel chooses");
                msg.header.index = 0;
                send(msg, what)
            }
            r => r,
        }
    }

    pub fn link_set_alias(&self, name: &str, alias: &str) -> Result<(), NetlinkError> {
        let idx = self.link_index(name)?;
        let msg = LinkUnspec::new_with_index(idx)
            .append_extra_attribute(LinkAttribute::IfAlias(alias.to_string()))
            .build();
        let h = self.handle.clone();
        let what = format!("set alias of {name}");
        self.run(async move { h.link().set(msg).execute().await.map_err(k(what)) })
    }

    pub fn link_set_master(&self, name: &str, master: Option<&str>) -> Result<(), NetlinkError> {
        let idx = self.link_index(name)?;
        let b = LinkUnspec::new_with_index(idx);
        let msg = match master {
            Some(m) => b.controller(self.link_index(m)?).build(),
            None => b.nocontroller().build(),
        };
        let h = self.handle.clone();
        let what = format!("set {name} master {master:?}");
        self.run(async move { h.link().set(msg).execute().await.map_err(k(what)) })
    }

    pub fn link_set_up(&self, name: &str) -> Result<(), NetlinkError> {
        let idx = self.link_index(name)?;
        let msg = LinkUnspec::new_with_index(idx).up().build();
        let h = self.handle.clone();
        let what = format!("set {name} up");
        self.run(async move { h.link().set(msg).execute().await.map_err(k(what)) })
    }

    pub fn link_delete(&self, name: &str) -> Result<(), NetlinkError> {
        let idx = self.link_index(name)?;
        self.indexes.borrow_mut().remove(name);
        let h = self.handle.clone();
        let what = format!("delete link {name}");
        self.run(async move { h.link().del(idx).execute().await.map_err(k(what)) })
    }
}

/// An open handle on named namespace `netns`, for IFLA_NET_NS_FD.
fn open_netns(netns: &str) -> Result<std::fs::File, NetlinkError> {
    crate::kernel::netns::open(netns).map_err(|e| NetlinkError::Setting {
        what: format!("open netns {netns}"),
        err: std::io::Error::other(e.to_string()),
    })
}
