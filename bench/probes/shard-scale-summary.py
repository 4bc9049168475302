#!/usr/bin/env python3
"""Medians and ratios of a bench/shard_scale.sh run: shard-scale-summary.py RESULT_FILE.

64-byte UDP is what one emulated CPU sends, forwards and receives at once: its rounds spread
widely (the sender's pace decides most of them); TCP is the steadier figure."""
import statistics
import sys

rows = [line.split() for line in open(sys.argv[1]) if line.startswith("ROUND ")]
names = {"f": "one namespace", "a": "shards", "b": "shards"}
med = {}
for lab in ("f", "a", "b"):
    r = [x for x in rows if x[2] == lab]
    if not r:
        continue
    med[lab] = [statistics.median(float(x[i]) for x in r) for i in (4, 5, 6)]
    lo_hi = [(min(float(x[i]) for x in r), max(float(x[i]) for x in r)) for i in (4, 5)]
    print("median lab %s (%s, %s tenants, %d rounds): TCP %.3f Gbit/s (%.3f-%.3f), "
          "64 B %.2f kpps (%.2f-%.2f), ping %.3f ms"
          % (lab, names[lab], r[0][3], len(r), med[lab][0] / 1e9, lo_hi[0][0] / 1e9,
             lo_hi[0][1] / 1e9, med[lab][1] / 1e3, lo_hi[1][0] / 1e3, lo_hi[1][1] / 1e3,
             med[lab][2]))
for x, y, what in (("b", "a", "the tenants, sharded"), ("a", "f", "the shard's hop, one tenant")):
    if x in med and y in med:
        p, q = med[x], med[y]
        print("ratio %s/%s (%s): TCP %.2fx, 64 B %.2fx, ping %.2fx"
              % (x, y, what, p[0] / q[0], p[1] / q[1], p[2] / q[2]))
