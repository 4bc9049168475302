#!/bin/sh
# Run by bench/index_lookups.sh as the second lab's "ballast": after the lab's apply, count
# every device-index lookup from then on (kprobes on the kernel's three by-index lookups, and
# on ip_forward and ip_rcv to count packets), and keep a stack trace of the first 300 lookups
# of a per-tenant index. Records this namespace's devices for the summary.
set -e
ip -o link | awk -F': ' '{ split($2, n, "@"); print $1, n[1] }' > /tmp/index-lookups.links
T=/sys/kernel/tracing
mountpoint -q $T || mount -t tracefs nodev $T
cd $T
echo 'p:dgbi dev_get_by_index_rcu net=%di:u64 ifindex=%si:s32' >> kprobe_events
echo 'p:dgbi2 dev_get_by_index net=%di:u64 ifindex=%si:s32' >> kprobe_events
echo 'p:dgbi3 __dev_get_by_index net=%di:u64 ifindex=%si:s32' >> kprobe_events
echo 'p:ipfwd ip_forward' >> kprobe_events
echo 'p:iprcv ip_rcv' >> kprobe_events
echo 262144 > buffer_size_kb
first=$(awk '$2 ~ /^tg[vep][0-9]/ { print $1; exit }' /tmp/index-lookups.links)
echo "stacktrace:300 if ifindex >= ${first:-2}" > events/kprobes/dgbi/trigger
echo > trace
for e in dgbi dgbi2 dgbi3 ipfwd iprcv; do echo 1 > events/kprobes/$e/enable; done
echo "counting device-index lookups; this lab's devices: $(tr '\n' ' ' < /tmp/index-lookups.links)"
