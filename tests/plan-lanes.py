#!/usr/bin/env python3
"""Reads `cargo test --no-run --message-format=json` on stdin and prints the test plan of
tests/run-suite.sh, one binary a line: LANE, the package directory, the executable, a name.

Lane `host` holds the unit tests and the integration tests that boot nothing; lanes `vm1`
and `vm2` share the testbed's end-to-end suites, balanced by how long each took on this
2-core machine (seconds, measured one at a time; a suite not listed counts 60)."""

import json
import os
import sys

# The testbed's integration tests that boot no VM.
HOST_ONLY = {"hostile_cli", "layout", "sorted_variants"}
# Seconds each end-to-end suite took alone (reference machine, 2026-12-06, after the
# shared boots and the optimized copy library of #19 item 7).
WEIGHT = {
    "rdma": 107, "nvme": 73, "path": 68, "p2pcopy": 84, "testbed": 65,
    "vulkan": 58, "ahead": 60, "export": 37, "iommufd": 68, "drm": 25,
    "chaos": 18, "soak": 16, "cli": 9, "ahead_nvme": 45,
    # 79-103 s alone, but each of its tests runs two VMs at once (two cores):
    # core-seconds.
    "wire": 160,
    # One VM (17 s) and three pairs of two VMs (about 20 s each, two cores).
    "nic": 100,
}

host, vm = [], []
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if not m.get("profile", {}).get("test"):
        continue
    dir_ = os.path.dirname(m["manifest_path"])
    name = m["target"]["name"]
    kind = m["target"]["kind"][0]
    row = (dir_, m["executable"], f"{m['package_id'].split('#')[-1]} {kind} {name}")
    if kind == "test" and dir_.endswith("/tests") and name not in HOST_ONLY:
        vm.append((WEIGHT.get(name, 60), name, row))
    else:
        host.append(row)

for row in sorted(host, key=lambda r: r[2]):
    print("host", *row, sep="\t")
# Longest first, each to the lane with less work so far.
load = {"vm1": 0, "vm2": 0}
for weight, name, row in sorted(vm, key=lambda v: (-v[0], v[1])):
    lane = min(load, key=lambda k: (load[k], k))
    load[lane] += weight
    print(lane, *row, sep="\t")
