#!/usr/bin/env python3
"""Writes the kernel objects of one shard-scale lab (bench/shard_scale.sh) as `ip -batch` and
`nft -f` files, so that the VM only loads them: the generation would take minutes of emulated
shell, here it takes a second.

    shard-scale-gen.py DIR LAB TENANTS SHARD_SIZE [flat|offload|symmetric|offload-symmetric]

Lab LAB's namespaces are ss<LAB>g (gateway), ss<LAB>c (client), ss<LAB>p (tunnel peer) and
ss<LAB>s<j> (shards). Tenant 1 is the measured one (EIP 203.0.113.11 -> 10.0.0.7 behind the
tunnel, key 1); tenants 2.. are fillers with EIPs in 10.128.0.0/9 that no route covers.

Per shard j: a veth pair tgl<j> (gateway) / tgl (shard), the shard's own lower; a macvlan on
the public device (tgxp) for the shard's traffic out to the public side. Per tenant i: a VRF
tgv<i> (table i) in its shard, its entry macvlan tgi<i> on the shard's lower, and its tunnel
macvlan tgt<i> on the gateway's external tunnel device (made in the gateway, placed in the
shard), both enslaved to the VRF. The gateway's netdev rules rewrite the destination MAC to the
tenant's entry macvlan and forward the frame to the tenant's shard lower (public side by
destination address, tunnel side by the mark the outer header earned); the shard conntracks
(zone by entry device) and DNATs the EIP, and the VRF routes it out of the tunnel macvlan with
an lwtunnel route; replies leave by the shard's public macvlan (a route leaked into the VRF).

`offload` adds a flowtable to each shard, over its lower, its public macvlan and its tenants'
devices (a flowtable holds at most 256 devices: shards of up to 127 tenants), and a forward
rule that offloads established TCP and UDP flows, behind a counter of the packets that still
cross the forward hook (the slow path). `symmetric` gives each side one device for both
directions, as a flowtable needs (`offload-symmetric`: with the flowtable): the public side leaves by the tenant's entry macvlan
too (through the shard lower, back in the gateway forwarded to the public device by a netdev
rule), the tunnel side enters by the tenant's tunnel macvlan (stamped, not forwarded).

`flat` builds the reference, tollgate's path today: the VRFs in the gateway's namespace, the
public entry macvlan on the public device and the tunnel macvlan as the tunnel-side entry, the
stamps rewriting the destination MAC only (no shard lower, no forward).
"""
import os
import sys

PEER_MAC = "02:74:00:00:00:07"
CLIENT_MAC = "02:75:00:00:00:02"


def mac(kind, i):
    return "02:%02x:%02x:%02x:%02x:%02x" % (
        kind, (i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255)


def eip(i):
    if i == 1:
        return "203.0.113.11"
    return "10.%d.%d.%d" % (128 + ((i >> 16) & 127), (i >> 8) & 255, i & 255)


def tenant_batch(i, entry_lower, tunnel_here, default_dev, client_neigh):
    """A tenant's VRF, entry macvlan (on `entry_lower`), tunnel macvlan settings and routes;
    `tunnel_here` also makes the tunnel macvlan (the sharded labs make it in the gateway)."""
    lines = [
        "link add tgv%d type vrf table %d" % (i, i),
        "link set tgv%d up" % i,
        "link add tgi%d link %s address %s type macvlan mode private"
        % (i, entry_lower, mac(0x71, i)),
    ]
    if tunnel_here:
        lines.append("link add tgt%d link tgtun address %s type macvlan mode private"
                     % (i, mac(0x72, i)))
    lines += [
        "link set tgi%d master tgv%d" % (i, i),
        "link set tgt%d master tgv%d" % (i, i),
        "link set tgi%d up" % i,
        "link set tgt%d up" % i,
        "addr add 10.0.0.1/24 dev tgt%d" % i,
        "route replace 10.0.0.0/24 dev tgt%d encap ip id %d dst 172.31.0.2 key table %d"
        % (i, i, i),
        "route add default via 198.51.100.2 dev %s onlink table %d" % (default_dev, i),
        "neigh replace 10.0.0.7 lladdr %s dev tgt%d nud permanent" % (PEER_MAC, i),
    ]
    if client_neigh:
        lines.append("neigh replace 198.51.100.2 lladdr %s dev tgi%d nud permanent"
                     % (CLIENT_MAC, i))
    return lines


def peers_map(ids):
    """The gateway's map (outer source, GRE key) -> tenant mark, as an nft map."""
    elems = ", ".join("172.31.0.2 . 0x%x : %d" % (i, i) for i in ids)
    return f"""\tmap peers {{
\t\ttypeof ip saddr . @th,32,32 : meta mark
\t\telements = {{ {elems} }}
\t}}
"""


# the gateway's rule that marks an underlay packet by its peer and key
UNDERLAY_MARK = ('\t\tiifname "eth-ul" ip protocol gre @th,0,32 0x20006558 '
                 'meta mark set ip saddr . @th,32,32 map @peers\n')


def pre_nat(ids):
    """The DNAT chain of a lab's tenants: each EIP to the host behind its tunnel."""
    entries = ", ".join('"tgi%d"' % i for i in ids)
    dnat = ", ".join("%s : 10.0.0.7" % eip(i) for i in ids)
    return f"""\tchain pre_nat {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tmeta iifkind "vrf" accept
\t\tiifname {{ {entries} }} dnat ip to ip daddr map {{ {dnat} }}
\t}}
"""


def main():
    out, lab, tenants, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    flat = sys.argv[5:] == ["flat"]
    offload = sys.argv[5:] in (["offload"], ["offload-symmetric"])
    sym = sys.argv[5:] in (["symmetric"], ["offload-symmetric"])
    os.makedirs(out, exist_ok=True)
    ns = "ss" + lab
    if flat:
        return write_flat(out, lab, tenants)
    shards = (tenants + size - 1) // size
    members = [list(range(j * size + 1, min((j + 1) * size, tenants) + 1)) for j in range(shards)]
    with open(os.path.join(out, lab + "-shards"), "w") as f:
        f.write(" ".join("%ss%d" % (ns, j) for j in range(shards)) + "\n")
    gw = []
    for j, ids in enumerate(members):
        s = "%ss%d" % (ns, j)
        gw.append("link add tgl%d type veth peer name tgl netns %s" % (j, s))
        gw.append("link set tgl%d up" % j)
        gw.append("link add tgxp link eth-pub netns %s address %s type macvlan mode private"
                  % (s, mac(0x73, j)))
        for i in ids:
            gw.append("link add tgt%d link tgtun netns %s address %s type macvlan mode private"
                      % (i, s, mac(0x72, i)))
        sh = ["link set tgl up", "link set tgxp up",
              "neigh replace 198.51.100.2 lladdr %s dev tgxp nud permanent" % CLIENT_MAC]
        for i in ids:
            sh += tenant_batch(i, "tgl", False, "tgi%d" % i if sym else "tgxp", sym)
        with open(os.path.join(out, "%s-s%d.batch" % (lab, j)), "w") as f:
            f.write("\n".join(sh) + "\n")
        zones = ", ".join(('"tgi%d" : %d, "tgt%d" : %d' if sym else '"tgi%d" : %d')
                          % ((i, i, i, i) if sym else (i, i)) for i in ids)
        ft = ""
        if offload:
            devs = ", ".join(['"tgl"', '"tgxp"'] + ['"tgi%d", "tgt%d"' % (i, i) for i in ids])
            ft = f"""\tflowtable ft {{
\t\thook ingress priority filter
\t\tdevices = {{ {devs} }}
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tcounter comment "packets that took the slow path"
\t\tmeta l4proto {{ tcp, udp }} ct state established flow add @ft
\t}}
"""
        with open(os.path.join(out, "%s-s%d.nft" % (lab, j)), "w") as f:
            f.write(f"""table inet ss {{
{ft}\tchain pre_raw {{
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tmeta iifkind "vrf" accept
\t\tct zone set iifname map {{ {zones} }}
\t}}
{pre_nat(ids)}}}
""")
    with open(os.path.join(out, lab + "-gw.batch"), "w") as f:
        f.write("\n".join(gw) + "\n")
    ids = range(1, tenants + 1)
    peers = peers_map(ids)
    pub_mac = ", ".join("%s : %s" % (eip(i), mac(0x71, i)) for i in ids)
    pub_fwd = ", ".join('%s : "tgl%d"' % (eip(i), (i - 1) // size) for i in ids)
    tun_mac = ", ".join("%d : %s" % (i, mac(0x72 if sym else 0x71, i)) for i in ids)
    tun_fwd = ", ".join('%d : "tgl%d"' % (i, (i - 1) // size) for i in ids)
    tun_rule = "meta protocol ip ether daddr set meta mark map { %s }" % tun_mac
    if not sym:
        tun_rule += " fwd to meta mark map { %s }" % tun_fwd
    back = "".join(f"""\tchain back{j} {{
\t\ttype filter hook ingress device "tgl{j}" priority -10; policy accept;
\t\tfwd to "eth-pub"
\t}}
""" for j in range(shards)) if sym else ""
    with open(os.path.join(out, lab + "-gw.nft"), "w") as f:
        f.write(f"""table inet ss {{
{peers}\tchain pre_raw {{
\t\ttype filter hook prerouting priority raw; policy accept;
{UNDERLAY_MARK}\t}}
}}
table netdev ss {{
\tchain pub {{
\t\ttype filter hook ingress device "eth-pub" priority -10; policy accept;
\t\tmeta pkttype host meta protocol ip ether daddr set ip daddr map {{ {pub_mac} }} fwd to ip daddr map {{ {pub_fwd} }}
\t}}
\tchain tun {{
\t\ttype filter hook ingress device "tgtun" priority -10; policy accept;
\t\t{tun_rule}
\t}}
{back}}}
""")


def write_flat(out, lab, tenants):
    """The reference lab: one namespace, entry macvlans on the public and tunnel devices."""
    with open(os.path.join(out, lab + "-shards"), "w") as f:
        f.write("\n")
    gw = []
    for i in range(1, tenants + 1):
        gw += tenant_batch(i, "eth-pub", True, "tgi%d" % i, True)
    with open(os.path.join(out, lab + "-gw.batch"), "w") as f:
        f.write("\n".join(gw) + "\n")
    ids = range(1, tenants + 1)
    peers = peers_map(ids)
    pub_mac = ", ".join("%s : %s" % (eip(i), mac(0x71, i)) for i in ids)
    tun_mac = ", ".join("%d : %s" % (i, mac(0x72, i)) for i in ids)
    zones = ", ".join('"tgi%d" : %d, "tgt%d" : %d' % (i, i, i, i) for i in ids)
    with open(os.path.join(out, lab + "-gw.nft"), "w") as f:
        f.write(f"""table inet ss {{
{peers}\tchain pre_raw {{
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tmeta iifkind "vrf" accept
{UNDERLAY_MARK}\t\tct zone set iifname map {{ {zones} }}
\t}}
{pre_nat(ids)}}}
table netdev ss {{
\tchain pub {{
\t\ttype filter hook ingress device "eth-pub" priority -10; policy accept;
\t\tmeta pkttype host meta protocol ip ether daddr set ip daddr map {{ {pub_mac} }}
\t}}
\tchain tun {{
\t\ttype filter hook ingress device "tgtun" priority -10; policy accept;
\t\tmeta protocol ip ether daddr set meta mark map {{ {tun_mac} }}
\t}}
}}
""")


if __name__ == "__main__":
    main()
