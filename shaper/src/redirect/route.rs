//! Route mode's kernel objects, over rtnetlink: a default route to the TAP in the shaper's
//! table, an `fwmark` rule selecting that table, and the `local` rule moved after it (a rule at
//! priority 0 would otherwise deliver every local packet before ours is consulted).
//!
//! Every rule and route we add carries protocol [`RTPROT_TOLLGATE`]: that is how a restart
//! after SIGKILL finds the stale ones, and how stop removes exactly ours. A `lookup local` rule
//! with our protocol means we moved the kernel's: undoing puts one back at priority 0 first, so
//! there is never a moment without local delivery.

use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::net::Ipv4Addr;
use tollgate::gateway::netlink::{dump_routes, dump_rules, route_table};

/// Protocol number on our rules and routes (iproute2 shows it as `proto 245`).
pub const RTPROT_TOLLGATE: u8 = 245;
const RT_TABLE_LOCAL: u32 = 255;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("{what}: {err}")]
    Netlink { what: String, err: rtnetlink::Error },
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RouteError {
    let what = what.into();
    move |err| RouteError::Netlink { what, err }
}

/// Route mode parameters.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    pub table: u32,
    pub mark: u32,
    pub priority: u32,
}

/// Runs a netlink conversation on a private current-thread runtime (rtnetlink is async only).
pub fn run<T>(f: impl AsyncFnOnce(Handle) -> Result<T, RouteError>) -> Result<T, RouteError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(RouteError::Socket)?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        let task = tokio::spawn(conn);
        let out = f(handle).await;
        task.abort();
        out
    })
}

fn rule_table(r: &RuleMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn rule_priority(r: &RuleMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn is_ours_rule(r: &RuleMessage) -> bool {
    r.attributes
        .contains(&RuleAttribute::Protocol(RouteProtocol::Other(
            RTPROT_TOLLGATE,
        )))
}

/// A plain `from all lookup local` rule (no selectors).
fn is_local_lookup(r: &RuleMessage) -> bool {
    r.header.action == RuleAction::ToTable
        && rule_table(r) == RT_TABLE_LOCAL
        && r.header.src_len == 0
        && r.header.dst_len == 0
        && !r.attributes.iter().any(|a| {
            matches!(
                a,
                RuleAttribute::FwMark(_)
                    | RuleAttribute::Iifname(_)
                    | RuleAttribute::Oifname(_)
                    | RuleAttribute::Source(_)
                    | RuleAttribute::Destination(_)
                    | RuleAttribute::IpProtocol(_)
                    | RuleAttribute::UidRange(_)
            )
        })
}

async fn rules(h: &Handle) -> Result<Vec<RuleMessage>, RouteError> {
    dump_rules(h).await.map_err(nl("list IPv4 rules"))
}

async fn add_local_rule(h: &Handle, priority: u32, ours: bool) -> Result<(), RouteError> {
    let mut req = h
        .rule()
        .add()
        .v4()
        .table_id(RT_TABLE_LOCAL)
        .priority(priority)
        .action(RuleAction::ToTable);
    if ours {
        req.message_mut()
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Other(
                RTPROT_TOLLGATE,
            )));
    } else {
        req.message_mut()
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Kernel));
    }
    req.execute()
        .await
        .map_err(nl(format!("add rule pref {priority} lookup local")))
}

/// Installs route, local-rule move and fwmark rule for the TAP with index `tap_index`.
pub async fn install(h: Handle, spec: RouteSpec, tap_index: u32) -> Result<(), RouteError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(spec.table)
        .output_interface(tap_index)
        .protocol(RouteProtocol::Other(RTPROT_TOLLGATE))
        .scope(RouteScope::Link)
        .build();
    h.route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(nl(format!(
            "add route default dev <tap> table {}",
            spec.table
        )))?;

    let existing = rules(&h).await?;
    let local_first = existing
        .iter()
        .filter(|r| is_local_lookup(r) && rule_priority(r) <= spec.priority)
        .cloned()
        .collect::<Vec<_>>();
    if !local_first.is_empty() {
        add_local_rule(&h, spec.priority + 1, true).await?;
        for r in local_first {
            let p = rule_priority(&r);
            h.rule()
                .del(r)
                .execute()
                .await
                .map_err(nl(format!("delete rule pref {p} lookup local")))?;
        }
    }
    let mut req = h
        .rule()
        .add()
        .v4()
        .table_id(spec.table)
        .priority(spec.priority)
        .fw_mark(spec.mark)
        .action(RuleAction::ToTable);
    let m = req.message_mut();
    m.attributes.push(RuleAttribute::FwMask(u32::MAX));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Other(
            RTPROT_TOLLGATE,
        )));
    req.execute().await.map_err(nl(format!(
        "add rule pref {} fwmark {:#x} lookup {}",
        spec.priority, spec.mark, spec.table
    )))?;
    Ok(())
}

/// Removes every rule and route of ours (in `table`), putting the kernel's `local` rule back at
/// priority 0 first if we had moved it. Safe to call when nothing is installed.
pub async fn remove(h: Handle, table: u32) -> Result<(), RouteError> {
    let all = rules(&h).await?;
    let moved_local = all.iter().any(|r| is_ours_rule(r) && is_local_lookup(r));
    let has_kernel_local = all
        .iter()
        .any(|r| !is_ours_rule(r) && is_local_lookup(r) && rule_priority(r) == 0);
    if moved_local && !has_kernel_local {
        add_local_rule(&h, 0, false).await?;
    }
    for r in all.into_iter().filter(is_ours_rule) {
        let p = rule_priority(&r);
        h.rule()
            .del(r)
            .execute()
            .await
            .map_err(nl(format!("delete rule pref {p}")))?;
    }
    let routes = dump_routes(&h).await.map_err(nl("list IPv4 routes"))?;
    for r in routes {
        let t = route_table(&r);
        if t == table && r.header.protocol == RouteProtocol::Other(RTPROT_TOLLGATE) {
            h.route()
                .del(r)
                .execute()
                .await
                .map_err(nl(format!("delete route in table {table}")))?;
        }
    }
    Ok(())
}
