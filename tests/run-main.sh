#!/usr/bin/env bash
# The main job on the testbed default: boot the reference kernel with two ivshmem devices
# and an edu DMA engine, and run peerdma inside. Run as root on a Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PEERDMA_REFERENCE_KERNEL:-}" ] && [ -f ../shared/testbed/bzImage-7.2.13-peerdma ]; then
  export PEERDMA_REFERENCE_KERNEL="$PWD/../shared/testbed/bzImage-7.2.13-peerdma"
fi
cargo build --release --workspace --bins --quiet
exec target/release/peerdma-testbed run "$@" -- target/release/peerdma list
