#!/usr/bin/env python3
"""Ballast helper: grows every per-tenant set and map of tollgate's ruleset in this namespace
to N elements (default 10,000) with keys no packet carries, and loads it back in one
transaction. With one tenant, every set or map of one element is taken as per-tenant (also
those nft prints without braces: `ct zone 1000`, `iifname "tgp1000"`), and so is one whose
keys are all the tenant's entry devices (two or three per tenant); the flowtable's and
netdev chains' device lists are left alone. The added elements' values copy the tenant's
own. What was grown is printed."""
import ipaddress
import re
import subprocess
import sys

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
text = subprocess.run(["nft", "list", "ruleset"], check=True, capture_output=True, text=True).stdout

ids = set(re.findall(r'"tg[pev](\d+)"', text))
if len(ids) != 1:
    sys.exit(f"expected one tenant's devices in the ruleset, found ids {sorted(ids)}")


# fake addresses must reach no real host: none may fall in a prefix this namespace routes
FAKE_NET = ipaddress.IPv4Network("10.250.0.0/16")
routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], check=True,
                        capture_output=True, text=True).stdout
for r in routes.splitlines():
    words = r.split()
    if not words or r.startswith(" "):
        continue
    # a route type ("local", "unreachable", ...) comes before the prefix
    dst = words[1] if not words[0][0].isdigit() and words[0] != "default" else words[0]
    if dst == "default":
        continue
    if ipaddress.IPv4Network(dst, strict=False).overlaps(FAKE_NET):
        sys.exit(f"fake keys {FAKE_NET} overlap a route here: {r}")
if N > FAKE_NET.num_addresses:
    sys.exit(f"at most {FAKE_NET.num_addresses} elements")


def fake_key(k, i):
    """A key of k's kind that no packet carries."""
    parts = [p.strip() for p in k.split(" . ")]
    out = []
    for p in parts:
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", p):
            out.append(str(ipaddress.IPv4Address(int(FAKE_NET.network_address) + i)))
        elif re.fullmatch(r'"[^"]*"', p):
            out.append(f'"tgf{100000 + i}"')
        elif re.fullmatch(r"0x[0-9a-f]+", p):
            out.append(hex(0x100000 + i))
        elif re.fullmatch(r"\d+", p):
            out.append(str(20000 + i))  # zones are 16 bits
        else:
            return None
    return " . ".join(out)


grown = []


TENANT_DEV = re.compile(r'"tg[a-z]\d+"')


def grow(m):
    body = m.group(1)
    items = [s.strip() for s in body.split(",")]
    keys = [item.partition(" : ")[0] for item in items]
    # one element, or one per entry device of the tenant (its `tge`/`tgp` macvlans)
    if len(items) > 1 and not all(TENANT_DEV.fullmatch(k) for k in keys):
        return m.group(0)
    if len(items) == 1 and fake_key(keys[0], 1) is None:
        return m.group(0)  # a key of a kind fake_key cannot make (a prefix, a range)
    tails = [item.partition(" : ")[1:] for item in items]  # (" : ", value) or ("", "")
    new = list(items)
    for i in range(1, N):
        for j, (sep, val) in enumerate(tails):
            # several entry devices: one fake device name each
            k = fake_key(keys[0], i) if len(items) == 1 else f'"tgf{chr(97 + j)}{100000 + i}"'
            new.append(f"{k}{sep}{val}")
    grown.append(body)
    return "{ " + ", ".join(new) + " }"


def brace_singletons(line):
    """The one-element sets nft prints without braces: a tenant's zone, its entry device."""
    line = re.sub(r'\b(iifname) ("tg[a-z]\d+")(?! :)', r"\1 { \2 }", line)
    return re.sub(r"\bct zone (\d+)\b(?! \.)", r"ct zone { \1 }", line)


out = []
for line in text.splitlines():
    if "devices =" in line or line.rstrip().endswith("{"):
        out.append(line)
        continue
    out.append(re.sub(r"\{ ([^{}]+) \}", grow, brace_singletons(line)))
load = "flush ruleset\n" + "\n".join(out) + "\n"
subprocess.run(["nft", "-f", "-"], input=load, check=True, text=True)
what = f"grew {len(grown)} sets/maps to {N}" if N > 1 else f"reloaded {len(grown)} sets/maps as they were"
print(f"{what}: {'; '.join(grown)}")
