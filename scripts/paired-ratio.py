#!/usr/bin/env python3
"""Times commands in interleaved rounds (A, B, C, A, B, C, ...) and reports, per command, the
median wall time and the median of its per-round ratio to the first command.

On a machine whose CPU speed drifts (shared VMs), interleaving puts every command under the same
conditions within a round, so the ratio is far steadier than comparing separate runs.
Usage: paired-ratio.py ROUNDS NAME::COMMAND [NAME::COMMAND ...]   (COMMAND split shell-style)"""
import shlex
import statistics
import subprocess
import sys
import time

rounds = int(sys.argv[1])
commands = [arg.split("::", 1) for arg in sys.argv[2:]]
times = {name: [] for name, _ in commands}
for _ in range(rounds):
    for name, command in commands:
        start = time.perf_counter()
        subprocess.run(shlex.split(command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times[name].append(time.perf_counter() - start)
base = commands[0][0]
print("| command | median [ms] | min [ms] | median of per-round ratio to first row |")
print("|:---|---:|---:|---:|")
for name, _ in commands:
    ratios = [t / b for t, b in zip(times[name], times[base])]
    print(f"| {name} | {statistics.median(times[name]) * 1e3:.1f} | {min(times[name]) * 1e3:.1f} | {statistics.median(ratios):.2f}x |")
