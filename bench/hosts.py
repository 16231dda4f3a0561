#!/usr/bin/env python3
"""Two-host benchmark (issue 15): replication across a network link, in one run.

Two hosts are two network namespaces joined by a veth pair (as in the tests).
The recovery site's host holds the control plane and serves its vault
(`standby init --site recovery --listen`, `standby serve`); the primary
site's host joins it. On the 2 GiB real-filesystem image of bench/disk.py:

  initial replication across the link (standby sync into standby://, through
  the recovery host's listener: TLS, encrypted packs)
    vs rsync of the image to an rsync:// daemon in the other namespace
    vs the same standby sync into a local encrypted vault
  the same three with tc netem delay 25 ms on each side (50 ms round trip)
  the bandwidth limit: [sites.recovery] max_bandwidth set while the host
  serves, the measured rate of incompressible data against it

Rounds alternate the tools (--rounds, default 3) with fresh targets each
time, so the ratios compare work, not the page cache. Needs root (ip netns,
tc), rsync, and a release build (cargo build --release -p standby-cli).

Usage: bench/hosts.py [--size-gib 2] [--rounds 3] [--work DIR] [--limit-mib 50]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import disk  # noqa: E402  (the image builder)

STANDBY = disk.STANDBY
PRIMARY, RECOVERY = "sbbench-p", "sbbench-r"
PRIMARY_IP, RECOVERY_IP = "10.251.0.1", "10.251.0.2"
LISTEN_PORT, RSYNC_PORT = 7450, 8730


def sh(*command, netns=None, env=None, check=True, capture=True):
    if netns:
        command = ("ip", "netns", "exec", netns) + tuple(command)
    result = subprocess.run([str(c) for c in command], capture_output=capture, text=True,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed: {result.stderr[-2000:]}")
    return result


def make_link():
    for netns in (PRIMARY, RECOVERY):
        sh("ip", "netns", "del", netns, check=False)
    sh("ip", "netns", "add", PRIMARY)
    sh("ip", "netns", "add", RECOVERY)
    sh("ip", "link", "add", "vbench-p", "netns", PRIMARY, "type", "veth", "peer", "name", "vbench-r", "netns", RECOVERY)
    for netns, device, address in ((PRIMARY, "vbench-p", PRIMARY_IP), (RECOVERY, "vbench-r", RECOVERY_IP)):
        sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", device)
        sh("ip", "-n", netns, "link", "set", device, "up")
        sh("ip", "-n", netns, "link", "set", "lo", "up")


def netem_available():
    sh("tc", "qdisc", "add", "dev", "vbench-p", "root", "netem", "delay", "1ms", netns=PRIMARY, check=False)
    shown = sh("tc", "qdisc", "show", "dev", "vbench-p", netns=PRIMARY).stdout
    sh("tc", "qdisc", "del", "dev", "vbench-p", "root", netns=PRIMARY, check=False)
    return "netem" in shown


def set_delay(ms):
    for netns, device in ((PRIMARY, "vbench-p"), (RECOVERY, "vbench-r")):
        sh("tc", "qdisc", "del", "dev", device, "root", netns=netns, check=False)
        if ms:
            sh("tc", "qdisc", "add", "dev", device, "root", "netem", "delay", f"{ms}ms", "limit", "100000", netns=netns)


class Hosts:
    """A fresh two-host deployment (its vault empty), serving."""

    def __init__(self, work):
        self.work = work
        shutil.rmtree(work, ignore_errors=True)
        (work / "primary").mkdir(parents=True)
        (work / "recovery").mkdir(parents=True)
        self.recovery_home = work / "recovery" / "home"
        self.primary_home = work / "primary" / "home"
        listen = f"{RECOVERY_IP}:{LISTEN_PORT}"
        made = json.loads(sh(STANDBY, "init", self.recovery_home, "--site", "recovery", "--listen", listen, "--json",
                             netns=RECOVERY).stdout)
        self.log = open(work / "recovery.log", "w")
        self.daemon = subprocess.Popen(["ip", "netns", "exec", RECOVERY, str(STANDBY), "serve", "--home",
                                        str(self.recovery_home)], stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while not (self.recovery_home / "run" / "standby.sock").exists():
            if time.time() > deadline:
                sys.exit("the recovery host never served")
            time.sleep(0.1)
        time.sleep(0.5)
        sh(STANDBY, "join", self.primary_home, "--site", "primary", "--control", f"https://{listen}",
           "--join-token", made["join_token"], "--listen", f"{PRIMARY_IP}:{LISTEN_PORT}", netns=PRIMARY)
        self.vault = f"standby://{listen}/recovery"

    def sync(self, image, disk_name):
        """Seconds for the initial replication of `image` across the link, and bytes stored."""
        env = {"STANDBY_TLS_DIR": str(self.primary_home / "tls")}
        started = time.perf_counter()
        out = sh(STANDBY, "sync", image, "--vault", self.vault, "--key-file", self.primary_home / "keys" / "recovery.key",
                 "--disk", disk_name, "--json", netns=PRIMARY, env=env).stdout
        return time.perf_counter() - started, json.loads(out)["bytes_new"]

    def set_limit(self, text):
        config = self.recovery_home / "standby.toml"
        body = config.read_text().split("\n[sites.recovery]")[0]
        if text:
            body += f'\n[sites.recovery]\nmax_bandwidth = "{text}"\n'
        config.write_text(body)
        time.sleep(3)  # the daemon reads it every 2 s

    def stop(self):
        self.daemon.kill()
        self.daemon.wait()
        self.log.close()


def local_sync(work, image):
    vault = work / "local-vault"
    shutil.rmtree(vault, ignore_errors=True)
    key = work / "local.key"
    if key.exists():
        key.unlink()
    sh(STANDBY, "vault", "init", vault, "--key-file", key)
    started = time.perf_counter()
    sh(STANDBY, "sync", image, "--vault", vault, "--key-file", key, "--disk", "d", netns=PRIMARY)
    return time.perf_counter() - started


def rsync_daemon(work):
    target = work / "rsync-target"
    target.mkdir(parents=True, exist_ok=True)
    config = work / "rsyncd.conf"
    config.write_text(f"use chroot = no\n[m]\npath = {target}\nread only = no\nuid = root\ngid = root\n")
    process = subprocess.Popen(["ip", "netns", "exec", RECOVERY, "rsync", "--daemon", "--no-detach",
                                f"--config={config}", f"--port={RSYNC_PORT}", f"--address={RECOVERY_IP}"])
    time.sleep(1)
    return process, target


def rsync_copy(image, target):
    for old in target.iterdir():
        old.unlink()
    started = time.perf_counter()
    sh("rsync", "--whole-file", image, f"rsync://{RECOVERY_IP}:{RSYNC_PORT}/m/", netns=PRIMARY)
    return time.perf_counter() - started


def measure(work, image, rounds, delay_ms):
    set_delay(delay_ms)
    rsyncd, target = rsync_daemon(work)
    remote, local, rsync = [], [], []
    try:
        for round_ in range(rounds):
            hosts = Hosts(work / "hosts")
            try:
                disk.warm(image)
                os.sync()
                seconds, _ = hosts.sync(image, f"r{round_}")
                remote.append(seconds)
            finally:
                hosts.stop()
            os.sync()
            local.append(local_sync(work, image))
            os.sync()
            rsync.append(rsync_copy(image, target))
    finally:
        rsyncd.kill()
        rsyncd.wait()
        set_delay(0)
    return statistics.median(remote), statistics.median(local), statistics.median(rsync)


def bandwidth(work, limit_mib):
    data = work / "random.img"
    with open(data, "wb") as f:
        f.write(os.urandom(512 << 20))
    hosts = Hosts(work / "hosts")
    try:
        hosts.set_limit(f"{limit_mib}MiB/s")
        seconds, stored = hosts.sync(data, "limited")
        return stored / seconds / (1 << 20)
    finally:
        hosts.stop()
        data.unlink()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/standby-bench-hosts"))
    parser.add_argument("--limit-mib", type=int, default=50)
    args = parser.parse_args()
    if not STANDBY.exists():
        sys.exit(f"{STANDBY} is missing: cargo build --release -p standby-cli")
    args.work.mkdir(parents=True, exist_ok=True)
    image = disk.build_image(args.work, args.size_gib)
    size_mib = image.stat().st_size / (1 << 20)
    make_link()
    try:
        rows = []
        figures = {}
        delays = (0, 25) if netem_available() else (0,)
        if delays == (0,):
            print("this kernel has no netem (tc qdisc netem unknown): the 50 ms round trip rows are skipped")
        for delay in delays:
            remote, local, rsync = measure(args.work, image, args.rounds, delay)
            figures[delay] = remote
            label = "no delay" if delay == 0 else f"netem {delay} ms each side"
            rows.append((f"initial replication, {label}", size_mib / remote, size_mib / rsync, size_mib / local))
        print(f"\n{size_mib:.0f} MiB image, median of {args.rounds} alternating rounds (MiB/s of image):")
        print(f"{'':44} {'standby://':>10} {'rsync://':>10} {'local':>10} {'vs rsync':>9} {'vs local':>9}")
        for name, remote, rsync, local in rows:
            print(f"{name:44} {remote:10.0f} {rsync:10.0f} {local:10.0f} {remote / rsync:8.2f}x {remote / local:8.2f}x")
        if 25 in figures:
            print(f"throughput with a 50 ms round trip: {figures[0] / figures[25]:.2f}x of that without")
        rate = bandwidth(args.work, args.limit_mib)
        print(f"bandwidth limit {args.limit_mib} MiB/s: measured {rate:.1f} MiB/s ({(rate / args.limit_mib - 1) * 100:+.1f}%)")
    finally:
        for netns in (PRIMARY, RECOVERY):
            sh("ip", "netns", "del", netns, check=False)


if __name__ == "__main__":
    main()
