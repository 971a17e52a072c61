#!/usr/bin/env bash
# The main job on the testbed: boot the reference kernel with two ivshmem devices
# (00:10.0, 00:11.0), an edu DMA engine (00:12.0) and an NVMe controller (00:13.0, its
# image seeded on the host with a pattern), all bound to vfio-pci, and run p2pcopy with
# every engine the kernel offers: the CPU between the two ivshmem BARs, edu's DMA through
# iommufd, and the user-space NVMe engine reading 64 MiB from the drive straight into
# ivshmem's BAR (peer to peer, verified), with host memory as its baseline.
# Run as root on a Debian machine; extra arguments go to peerdma-testbed run
# (e.g. --kernel stock, --scratch DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PEERDMA_REFERENCE_KERNEL:-}" ] && [ -f ../shared/testbed/bzImage-7.2.13-peerdma ]; then
  export PEERDMA_REFERENCE_KERNEL="$PWD/../shared/testbed/bzImage-7.2.13-peerdma"
fi
echo "== building (release)" >&2
# The tools alone, then the testbed: a workspace build would turn on the testbed's
# `testing` feature in the tools too; the main job runs them as they ship, without it.
cargo build --release -p peerdma-tools --bins --quiet
cargo build --release -p peerdma-testbed --bin peerdma-testbed --quiet
bin="$PWD/target/release"
exec "$bin/peerdma-testbed" run --devices ivshmem,ivshmem,edu,nvme \
  --nvme-image nvme0=pattern:7 "$@" -- /bin/sh -c "
  set -e
  echo 'note: emulated devices (QEMU TCG, vIOMMU): the copies and their verification are real,'
  echo '      the GB/s figures are the emulator'\''s and say nothing about hardware (docs/benchmarks.md)'
  echo
  $bin/peerdma list --vfio
  echo
  $bin/p2pcopy 00:10.0 00:11.0 --engine cpu --size 16M
  if [ -e /dev/iommu ]; then
    echo
    $bin/p2pcopy 00:10.0 00:11.0 --engine dma --via 00:12.0 --size 64K
    echo
    $bin/p2pcopy nvme:00:13.0 00:11.0 --size 64M
    echo
    $bin/p2pcopy nvme:00:13.0 host --size 64M
  else
    echo 'dma and NVMe engines skipped: this kernel has no /dev/iommu (CONFIG_IOMMUFD off)'
  fi"
