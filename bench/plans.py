#!/usr/bin/python3
"""Recovery plan benchmark: a plan's failover of 3 groups x 2 machines against
the same six machines failed over one at a time, side by side in one run.

A real deployment (`standby init`, `serve`) with six of the project's test
guests (Debian kernel + busybox initramfs under TCG, writing a record every
100 ms), all protected. The plan `app` has three groups of two machines,
each with a console probe (the guest's first record at the recovery site).

In rounds (order swapped every round):
- singles: `failover NAME --shutdown-source` for each machine, one after
  another, each followed by waiting until its copy prints a record (what
  the plan's probe waits for): the sum of six single failovers, each
  brought up before the next starts, as an operator without a plan would;
- plan: `plan failover app --shutdown-source`: the groups in order, the two
  machines of a group side by side, each group's probes before the next
  group. Its total wall time, and the plan's RTO (the job's start to the
  last probe passing, from the job itself).
Between cases every machine goes back (`cancel`: the copies stop, the
sources run again) and replication catches up.

Target (issue 16): the plan's failover beats the sum of the single ones.
Needs qemu-system-x86, python3-libnbd (bench/lifecycle.py, whose helpers it
uses, imports it: run it with /usr/bin/python3), a release build (built
here) and the test guest
(target/standby-guest: run scripts/test first).
Usage: bench/plans.py [--work DIR] [--rounds 2] [--keep]
"""
import argparse
import calendar
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STANDBY = Path(os.environ.get("STANDBY_BIN", ROOT / "target" / "release" / "standby"))
MIB = 1 << 20
GROUPS = (("database", ("db1", "db2")), ("application", ("app1", "app2")), ("web", ("web1", "web2")))
MACHINES = [name for _, names in GROUPS for name in names]
# The test guest and the daemon's start, as the lifecycle benchmark has them.
_spec = importlib.util.spec_from_file_location("lifecycle", ROOT / "bench" / "lifecycle.py")
lifecycle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lifecycle)

APPEND = "console=ttyS0 quiet loglevel=3 panic=-1 standby.count=0 standby.interval=0.100 standby.file_kib=4"


def standby(*arguments):
    out = subprocess.run([STANDBY, *map(str, arguments)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"standby {' '.join(map(str, arguments))} failed: {out.stderr.strip()}{out.stdout.strip()}")
    return out


def console(home, name, site):
    return home / "run" / "machines" / f"{name}@{site}" / f"{name}@{site}.console"


def wait_for_record(path, after=0.0, timeout=300):
    """Until the console at `path` (written after `after`) shows a record."""
    deadline = time.time() + timeout
    while True:
        if path.exists() and path.stat().st_mtime >= after and b"standby-guest: record " in path.read_bytes():
            return
        if time.time() > deadline:
            sys.exit(f"{path} shows no record")
        time.sleep(0.1)


class Deployment:
    def __init__(self, work):
        self.home = work / "deployment"
        shutil.rmtree(self.home, ignore_errors=True)
        standby("init", self.home)
        kernel, initramfs = lifecycle.test_guest()
        for name in MACHINES:
            disk = work / f"{name}.raw"
            with open(disk, "wb") as f:
                f.truncate(64 * MIB)
            # The filesystem before the guest's 16 MiB record area.
            subprocess.run(["/sbin/mke2fs", "-q", "-F", "-t", "ext4", disk, f"{48 * 1024}k"], check=True)
            standby("machine", "add", name, "--disk", disk, "--kernel", kernel, "--initrd", initramfs,
                    "--append", APPEND, "--memory", "128", "--home", self.home)
        self.log = open(work / "daemon.log", "w")
        self.daemon = lifecycle.start_daemon(self.home, self.log)
        for name in MACHINES:
            standby("machine", "start", name, "--home", self.home)
        for name in MACHINES:
            wait_for_record(console(self.home, name, "primary"))
            standby("protect", name, "--home", self.home)
        groups = "".join(f'[[groups]]\nname = "{group}"\nmachines = {json.dumps(list(names))}\n\n'
                         for group, names in GROUPS)
        probes = "".join(f'[probes.{name}]\nconsole = "standby-guest: record [0-9]+"\ntimeout = "5m"\n\n'
                         for name in MACHINES)
        plan = work / "app.toml"
        plan.write_text(f'name = "app"\n\n{groups}{probes}')
        standby("plan", "create", plan, "--home", self.home)

    def caught_up(self):
        """Until every machine's latest point is newer than now (replication caught up)."""
        moment = time.time()
        deadline = moment + 300
        while True:
            status = json.loads(standby("status", "--home", self.home, "--json").stdout)
            behind = [m["name"] for m in status["machines"]
                      if not m["disks"] or not m["disks"][0].get("latest")
                      or parse_time(m["disks"][0]["latest"]) < moment]
            if not behind:
                return
            if time.time() > deadline:
                sys.exit(f"replication did not catch up: {behind}")
            time.sleep(0.5)

    def singles(self):
        began = time.time()
        each = []
        for name in MACHINES:
            start = time.time()
            standby("failover", name, "--shutdown-source", "--home", self.home)
            wait_for_record(console(self.home, name, "recovery"), after=start)
            each.append(time.time() - start)
        return time.time() - began, each

    def plan(self):
        began = time.time()
        out = standby("plan", "failover", "app", "--shutdown-source", "--home", self.home, "--json")
        total = time.time() - began
        job = json.loads(out.stdout)
        last = job["steps"][-1]["detail"]
        rto = float(last.split()[1]) if last.startswith("RTO ") else float("nan")
        return total, rto, last

    def back(self):
        for name in MACHINES:
            standby("cancel", name, "--home", self.home)
        listed = json.loads(standby("machine", "list", "--home", self.home, "--json").stdout)["machines"]
        for machine in listed:
            if not (machine.get("runtime") or {}).get("running"):
                standby("machine", "start", machine["name"], "--home", self.home)
        for name in MACHINES:
            wait_for_record(console(self.home, name, "primary"))
        self.caught_up()

    def stop(self):
        subprocess.run(["pkill", "-f", str(self.home)], capture_output=True)
        self.daemon.terminate()
        self.daemon.wait()
        self.log.close()


def parse_time(text):
    stamp, _, fraction = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    return seconds + float("0." + (fraction or "0"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "target" / "bench-plans")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if not shutil.which("qemu-system-x86_64"):
        sys.exit("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "standby-cli"], cwd=ROOT, check=True)
    args.work.mkdir(parents=True, exist_ok=True)
    deployment = Deployment(args.work)
    singles, plans = [], []
    try:
        deployment.caught_up()
        for round_ in range(args.rounds):
            for case in (("singles", "plan") if round_ % 2 == 0 else ("plan", "singles")):
                if case == "singles":
                    total, each = deployment.singles()
                    singles.append(total)
                    print(f"round {round_ + 1} singles: {total:.1f} s "
                          f"({', '.join(f'{n} {s:.1f}' for n, s in zip(MACHINES, each))})", flush=True)
                else:
                    total, rto, last = deployment.plan()
                    plans.append((total, rto))
                    print(f"round {round_ + 1} plan: {total:.1f} s; {last}", flush=True)
                deployment.back()
    finally:
        deployment.stop()
        if not args.keep:
            shutil.rmtree(deployment.home, ignore_errors=True)
    single = statistics.median(singles)
    plan = statistics.median(total for total, _ in plans)
    rto = statistics.median(rto for _, rto in plans)
    print(f"\n6 test guests under TCG (3 groups x 2), {args.rounds} rounds, medians")
    print(f"{'six single failovers, one after another':<44} {single:7.1f} s")
    print(f"{'plan failover (groups in order, 2 side by side)':<44} {plan:7.1f} s   plan RTO {rto:.1f} s")
    met = "yes" if plan < single else "NO"
    print(f"plan / singles: x{plan / single:.2f} (target < 1: {met}); "
          f"{single - plan:+.1f} s saved")


if __name__ == "__main__":
    main()
