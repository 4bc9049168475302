//! IPv4 policy rules, built from the model so that a rule read back by
//! [`super::decode::rule`] can be deleted exactly.

use super::{Netlink, NetlinkError, k};
use crate::kernel::model::{Rule, RuleAction};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::packet_route::rule::{RuleAction as NlRuleAction, RuleAttribute, RuleMessage};

fn message(r: &Rule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
    m.attributes.push(RuleAttribute::Priority(r.priority));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(r.proto)));
    if let Some(i) = &r.iif {
        m.attributes.push(RuleAttribute::Iifname(i.clone()));
    }
    if let Some(mark) = r.fwmark {
        m.attributes.push(RuleAttribute::FwMark(mark));
        m.attributes.push(RuleAttribute::FwMask(u32::MAX));
    }
    if let Some(t) = r.tun_id {
        m.attributes.push(RuleAttribute::TunId(u64::from(t)));
    }
    if r.l3mdev {
        m.attributes.push(RuleAttribute::L3MDev(true));
    }
    match r.action {
        RuleAction::Lookup(t) => {
            m.header.action = NlRuleAction::ToTable;
            if let Ok(b) = u8::try_from(t) {
                m.header.table = b;
            }
            if !r.l3mdev {
                m.attributes.push(RuleAttribute::Table(t));
            }
        }
        RuleAction::Prohibit => m.header.action = NlRuleAction::Prohibit,
    }
    m
}

impl Netlink {
    pub fn rule_add(&self, r: &Rule) -> Result<(), NetlinkError> {
        let h = self.handle.clone();
        let what = format!("add {r}");
        let msg = message(r);
        self.run(async move {
            let mut req = h.rule().add();
            *req.message_mut() = msg;
            req.execute().await.map_err(k(what))
        })
    }

    pub fn rule_delete(&self, r: &Rule) -> Result<(), NetlinkError> {
        let h = self.handle.clone();
        let what = format!("delete {r}");
        let msg = message(r);
        self.run(async move { h.rule().del(msg).execute().await.map_err(k(what)) })
    }
}
