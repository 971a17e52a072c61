#!/usr/bin/env bash
# The whole peerdma test suite: unit tests, the ABI layout test against the 7.2 headers,
# and the end-to-end suites that boot the reference and the stock kernel under QEMU.
# Run as root on a Debian machine (installs QEMU & co. through apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# The prebuilt reference kernel saves a ten-minute build when ../shared is beside the repo.
if [ -z "${PEERDMA_REFERENCE_KERNEL:-}" ] && [ -f ../shared/testbed/bzImage-7.2.13-peerdma ]; then
  export PEERDMA_REFERENCE_KERNEL="$PWD/../shared/testbed/bzImage-7.2.13-peerdma"
fi
export CARGO_TERM_COLOR=never
# The `vulkan` and `drm` features are on for the whole run (drm: `peerdma show`, which
# the drm suite runs in the guest), so the Vulkan unit tests
# (importer/src/vulkan) compile and run, and vulkan_interop is built with the rest.
# They run on the host's lavapipe: install it first (as root; else the commands are printed).
FEATURES=(--features peerdma-tools/vulkan,peerdma-tools/drm)
echo "== build (the end-to-end suites run these binaries inside the VM)"
cargo build --workspace --bins --examples "${FEATURES[@]}" --quiet
echo "== host packages for the Vulkan unit tests"
target/debug/peerdma-testbed host-packages vulkan
echo "== tests"
cargo test --workspace "${FEATURES[@]}" --no-fail-fast -- --test-threads=1 "$@"
