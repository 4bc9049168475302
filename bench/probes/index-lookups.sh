#!/bin/sh
# Inside the VM (bench/index_lookups.sh): runs the side-by-side benchmark given as arguments,
# then summarises the trace probes/index-lookups-on.sh started.
set -e
T=/sys/kernel/tracing
"$@"
echo 0 > $T/tracing_on
echo "== lookups by probe, namespace and index (two labs of one tenant each, the same traffic;"
echo "   the names are the second lab's: the first lab's shared devices may sit at other indexes)"
awk 'NR == FNR { name[$1] = $2; next }
  $5 ~ /^(dgbi|ipfwd|iprcv)/ {
    ev = $5; sub(/:$/, "", ev); k = ev; ix = ""
    for (i = 6; i <= NF; i++) {
      if ($i ~ /^net=/) k = k " " $i
      if ($i ~ /^ifindex=/) { ix = substr($i, 9); k = k " " $i }
    }
    if (ix != "") k = k " (" (ix in name ? name[ix] : "?") ")"
    c[k]++
  } END { for (k in c) print c[k], k }' /tmp/index-lookups.links $T/trace | sort -rn | head -40
echo "== callers of per-tenant lookups (stack traces kept, by count)"
awk '/<stack trace>/ { s = ""; on = 1; n = 0; next }
  on && /^ => / { if (n < 7 && $2 !~ /^(kprobe|0x)/) { s = s $2 " "; n++ }; next }
  on { if (s != "") st[s]++; on = 0 }
  END { for (s in st) print st[s], s }' $T/trace | sort -rn | head -12
