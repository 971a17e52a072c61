#!/bin/sh
# Runs in the testbed guest (docs/benchmarks.md, "NVMe engines: user space against the
# kernel's nvme driver"): the same QEMU NVMe model twice, one controller on vfio-pci
# (the user-space engine, nvme:) and one on the kernel's nvme driver (blk:, io_uring into
# the BAR's dma-buf), each reading into and writing from ivshmem0's BAR2, alternating,
# REPS rounds. Prints p2pcopy's JSON report and "## cpu USER SYS WALL" after each copy.
#
#   peerdma-testbed run --kernel ahead --cpu-model max,family=23 \
#       --devices ivshmem,nvme,nvme-kernel -- tools/bench/compare-nvme-engines.sh \
#       target/release/p2pcopy [SIZE [ITERATIONS [REPS]]]
set -u
P=$1; SIZE=${2:-32M}; IT=${3:-8}; REPS=${4:-3}
bdf() { grep -A2 "\"role\": \"$1\"" /run/peerdma/testbed.json | sed -n 's/.*"bdf": "\(.*\)".*/\1/p'; }
A=$(bdf ivshmem0); N=$(bdf nvme0); K=$(bdf nvme-kernel0)
# The kernel driver probes asynchronously: wait for the namespace, bounded (30 s).
i=0; D=
while [ -z "$D" ]; do
    for c in /sys/bus/pci/devices/$K/nvme/nvme*; do [ -e "/dev/${c##*/}n1" ] && D=${c##*/}n1; done
    [ -n "$D" ] && break; i=$((i+1)); [ $i -lt 300 ] || exit 91; sleep 0.1
done
echo "## bdfs bar=$A nvme=$N nvme-kernel=$K dev=/dev/$D max_hw_sectors_kb=$(cat /sys/block/$D/queue/max_hw_sectors_kb)"
common="--size $SIZE --iterations $IT --queue-depth 32 --no-verify --json"
run() { /usr/bin/time -f "## cpu %U %S %e" "$P" "$@" $common 2>&1; }
r=0
while [ $r -lt "$REPS" ]; do
    run nvme:$N $A --transfer-size 524288
    run blk:/dev/$D $A
    run $A nvme:$N@65536 --transfer-size 524288
    run $A blk:/dev/$D@65536
    r=$((r+1))
done
