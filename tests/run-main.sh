#!/usr/bin/env bash
# The main job on the testbed default: boot the reference kernel with two ivshmem devices
# (00:10.0, 00:11.0) and an edu DMA engine (00:12.0), all bound to vfio-pci, and run
# p2pcopy between the two ivshmem BARs with every engine the kernel offers (the CPU, and
# edu's DMA through iommufd), verified.
# Run as root on a Debian machine; extra arguments go to peerdma-testbed run
# (e.g. --kernel stock, --scratch DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PEERDMA_REFERENCE_KERNEL:-}" ] && [ -f ../shared/testbed/bzImage-7.2.13-peerdma ]; then
  export PEERDMA_REFERENCE_KERNEL="$PWD/../shared/testbed/bzImage-7.2.13-peerdma"
fi
echo "== building (release)" >&2
cargo build --release --workspace --bins --quiet
bin="$PWD/target/release"
exec "$bin/peerdma-testbed" run "$@" -- /bin/sh -c "
  set -e
  $bin/peerdma list --vfio
  echo
  $bin/p2pcopy 00:10.0 00:11.0 --engine cpu --size 16M
  if [ -e /dev/iommu ]; then
    echo
    $bin/p2pcopy 00:10.0 00:11.0 --engine dma --via 00:12.0 --size 64K
  else
    echo 'dma engine skipped: this kernel has no /dev/iommu (CONFIG_IOMMUFD off)'
  fi"
