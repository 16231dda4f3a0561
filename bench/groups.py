#!/usr/bin/python3
"""Replication group benchmark: what the group barrier costs the guests' writes.

A real deployment (`standby init`, `serve`, `machine add`, `protect`) with
twelve machines of one disk each, all protected at once: three in group
`g5` (policy bookmarks every 5 s), three in `g1` (every 1 s), and three of
each policy in no group (timed bookmarks of their own, no barrier). The
daemon's groups loop makes the groups' points; every bookmark of a group's
disk is a group point (its splitters make none of their own).

For each interval, in rounds of two adjacent windows in turn order (grouped
first in odd rounds), three writers (one process per disk, standing in for
the guests: synchronous 4 KiB writes at random places, queue depth 1, over
NBD into the machine's splitter, as QEMU's would) write for the window's
length into either the group's three disks or the ungrouped three. Each
write's latency is measured by the writer (request to acknowledgement).
Printed per interval: p50, p99, p99.9 and max latency and writes/s with
and without the group, the added latency (grouped minus ungrouped, the
median over rounds of each round's pair) and the throughput ratio, and the
group points made in the grouped windows with the longest hold the daemon
recorded. Target (issue 16): every bookmark a group point, p99 added
latency <= 5 ms.

Needs python3-libnbd (Debian's /usr/bin/python3) and a release build.
Usage: bench/groups.py [--work DIR] [--rounds 3] [--window 15] [--keep]
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:
    import nbd
except ImportError:
    sys.exit("python3-libnbd is missing: apt-get install python3-libnbd (and run this with /usr/bin/python3)")

ROOT = Path(__file__).resolve().parent.parent
STANDBY = Path(os.environ.get("STANDBY_BIN", ROOT / "target" / "release" / "standby"))
MIB = 1 << 20
DISK_BYTES = 256 * MIB
TARGET_P99_ADDED_MS = 5.0
INTERVALS = (5, 1)


def standby(*arguments):
    out = subprocess.run([STANDBY, *map(str, arguments)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"standby {' '.join(map(str, arguments))} failed: {out.stderr.strip()}")
    return out


def writer(socket, export, seconds, seed, out):
    """Child process: QD1 4 KiB writes for `seconds`; latencies (µs) to `out`."""
    handle = nbd.NBD()
    handle.connect_uri(f"nbd+unix:///{export}?socket={socket}")
    rng = random.Random(seed)
    data = rng.randbytes(4096)
    slots = DISK_BYTES // 4096
    latencies = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        offset = rng.randrange(slots) * 4096
        began = time.perf_counter_ns()
        handle.pwrite(data, offset)
        latencies.append((time.perf_counter_ns() - began) // 1000)
    handle.shutdown()
    Path(out).write_text(json.dumps(latencies))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


class Fleet:
    def __init__(self, work):
        self.work = work
        self.home = work / "deployment"
        shutil.rmtree(self.home, ignore_errors=True)
        standby("init", self.home)
        for interval in INTERVALS:
            standby("policy", "add", f"b{interval}", "--bookmarks", f"{interval}s", "--home", self.home)
        self.sets = {}
        for interval in INTERVALS:
            for grouped in (True, False):
                names = [f"{'g' if grouped else 'n'}{interval}m{i}" for i in range(3)]
                for name in names:
                    image = work / f"{name}.raw"
                    with open(image, "wb") as f:
                        f.truncate(DISK_BYTES)
                    standby("machine", "add", name, "--disk", image, "--memory", "64", "--home", self.home)
                self.sets[(interval, grouped)] = names
        self.log = open(work / "daemon.log", "w")
        self.daemon = subprocess.Popen([STANDBY, "serve", "--home", self.home], stderr=self.log)
        deadline = time.time() + 30
        while not (self.home / "run" / "standby.sock").exists():
            if time.time() > deadline:
                sys.exit("the daemon did not start")
            time.sleep(0.05)
        time.sleep(0.5)
        for (interval, grouped), names in self.sets.items():
            for name in names:
                group = ["--group", f"g{interval}"] if grouped else []
                standby("protect", name, "--policy", f"b{interval}", *group, "--home", self.home)

    def group(self, interval):
        return json.loads(standby("group", "show", f"g{interval}", "--home", self.home, "--json").stdout)

    def window(self, interval, grouped, seconds, seed):
        procs, outs = [], []
        for i, name in enumerate(self.sets[(interval, grouped)]):
            socket = self.home / "run" / "disks" / f"{name}.disk0.sock"
            out = self.work / f"latencies-{name}.json"
            outs.append(out)
            procs.append(subprocess.Popen([sys.executable, __file__, "--writer", str(socket), f"{name}.disk0",
                                           str(seconds), str(seed + i), str(out)]))
        for proc in procs:
            if proc.wait() != 0:
                sys.exit("a writer failed")
        latencies = []
        for out in outs:
            latencies += json.loads(out.read_text())
        return latencies

    def stop(self):
        subprocess.run(["pkill", "-f", str(self.home)], capture_output=True)
        self.daemon.terminate()
        self.daemon.wait()
        self.log.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=ROOT / "target" / "bench-groups")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--writer", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        socket, export, seconds, seed, out = args.writer
        writer(socket, export, float(seconds), int(seed), out)
        return
    if not STANDBY.exists():
        sys.exit(f"{STANDBY} is missing: cargo build --release")
    args.work.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(args.work)
    results = {}
    try:
        time.sleep(5)  # initial replication of the empty disks, settled
        for interval in INTERVALS:
            for round_ in range(args.rounds):
                for grouped in ((True, False) if round_ % 2 == 0 else (False, True)):
                    before = fleet.group(interval)
                    latencies = fleet.window(interval, grouped, args.window, seed=round_ * 10)
                    after = fleet.group(interval)
                    made = after["points_made"] - before["points_made"]
                    not_made = after["points_not_made"] - before["points_not_made"]
                    entry = results.setdefault((interval, grouped), [])
                    entry.append({
                        "p50": percentile(latencies, 0.50) / 1000, "p99": percentile(latencies, 0.99) / 1000,
                        "p999": percentile(latencies, 0.999) / 1000, "max": max(latencies) / 1000,
                        "rate": len(latencies) / args.window, "made": made, "not_made": not_made,
                        "hold_max_ms": after["hold_max_ms"],
                    })
                    last = entry[-1]
                    print(f"{interval} s {'group   ' if grouped else 'no group'} round {round_ + 1}: "
                          f"p50 {last['p50']:.3f} ms p99 {last['p99']:.3f} ms max {last['max']:.1f} ms "
                          f"{last['rate']:.0f} writes/s" + (f", {made} group points ({not_made} not made)"
                                                           if grouped else ""), flush=True)
    finally:
        fleet.stop()
        if not args.keep:
            shutil.rmtree(fleet.home, ignore_errors=True)
    print(f"\n3 writers, 4 KiB synchronous random writes (queue depth 1), {args.rounds} rounds of two "
          f"{args.window:.0f} s windows per interval; medians over rounds")
    print(f"{'interval':>8} {'':9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8} {'writes/s':>9}")
    for interval in INTERVALS:
        for grouped in (False, True):
            rows = results[(interval, grouped)]
            med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
            print(f"{interval:>6} s {'group' if grouped else 'no group':9} {med('p50'):8.3f} {med('p99'):8.3f} "
                  f"{med('p999'):9.3f} {med('max'):8.1f} {med('rate'):9.0f}")
        grouped, alone = results[(interval, True)], results[(interval, False)]
        added50 = statistics.median(g["p50"] - a["p50"] for g, a in zip(grouped, alone))
        added99 = statistics.median(g["p99"] - a["p99"] for g, a in zip(grouped, alone))
        ratio = statistics.median(g["rate"] / a["rate"] for g, a in zip(grouped, alone))
        made = sum(g["made"] for g in grouped)
        not_made = sum(g["not_made"] for g in grouped)
        expected = args.rounds * args.window / interval
        met = "yes" if added99 <= TARGET_P99_ADDED_MS else "NO"
        print(f"{interval:>6} s added p50 {added50:+.3f} ms, p99 {added99:+.3f} ms (target <= "
              f"{TARGET_P99_ADDED_MS} ms: {met}); throughput x{ratio:.3f}; {made} group points "
              f"({expected:.0f} intervals), {not_made} not made; longest hold {grouped[-1]['hold_max_ms']:.2f} ms")


if __name__ == "__main__":
    main()
