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
# The `rdma` feature too (importer/src/rdma, p2pcopy's rdma engine and the rdma suite): it
# links rdma-core, installed below with the rest of what its tests need.
# The `testing` feature (the libraries' test hooks and p2pcopy's --test-revoke-after-*
# flags, which the suites drive) is on too: the testbed crate turns it on for what it
# depends on anyway; it is named here so the binaries the suites run in the guest
# (workspace_bin: target/debug/p2pcopy) are built with it.
FEATURES=(--features peerdma-tools/vulkan,peerdma-tools/drm,peerdma-tools/rdma,peerdma-tools/testing,peerdma-testbed/rdma)
echo "== host packages for the rdma feature (rdma-core, perftest)"
cargo build -p peerdma-testbed --bin peerdma-testbed --quiet
target/debug/peerdma-testbed host-packages rdma
echo "== build (the end-to-end suites run these binaries inside the VM)"
cargo build --workspace --bins --examples "${FEATURES[@]}" --quiet
echo "== host packages for the Vulkan unit tests"
target/debug/peerdma-testbed host-packages vulkan
echo "== the tools without the testing feature: no test hook, no hidden flag"
cargo test -p peerdma-tools --bin p2pcopy --quiet -- --exact tests::test_hooks_exist_only_with_the_testing_feature
echo "== tests"
# Every test binary is built first; the unit, doc and host-only tests run one after the
# other, then the end-to-end suites of the testbed (each boots VMs of one vCPU, about one
# core each) in two lanes at once, one per core of this 2-core machine: the suite's wall
# time is about half its test time (docs/testbed.md). Each binary runs as `cargo test`
# would run it: in its package's directory, its tests one at a time, all of them even
# after a failure. tests/plan-lanes.py says which suite goes to which lane.
cargo test --workspace "${FEATURES[@]}" --no-run --message-format=json --quiet \
  > target/test-binaries.json
python3 tests/plan-lanes.py < target/test-binaries.json > target/test-plan.tsv
cargo test --workspace "${FEATURES[@]}" --doc --quiet -- "$@"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run_lane() { # LANE: runs the plan's binaries of that lane, logging to $logs/LANE
  local lane=$1 failed=0 l dir exe name
  shift
  while IFS=$'\t' read -r l dir exe name; do
    [ "$l" = "$lane" ] || continue
    echo "     Running $name ($exe)"
    (cd "$dir" && "$exe" --test-threads=1 "$@") || failed=1
  done < target/test-plan.tsv > "$logs/$lane" 2>&1
  return $failed
}
status=0
run_lane host "$@" || status=1
cat "$logs/host"
run_lane vm1 "$@" & lane1=$!
run_lane vm2 "$@" & lane2=$!
wait $lane1 || status=1
wait $lane2 || status=1
cat "$logs/vm1" "$logs/vm2"
# One closing line for the whole run, summed over every binary's "test result:" line.
cat "$logs"/* | python3 -c '
import re, sys
p = f = 0
for line in sys.stdin:
    m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed", line)
    if m:
        p += int(m.group(1)); f += int(m.group(2))
print(f"{p} passed, {f} failed")'
exit $status
