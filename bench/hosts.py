#!/usr/bin/env python3
"""Two-host benchmark (issue 15): replication across a network link, in one run.

Two hosts are two network namespaces joined by a veth pair (as in the tests).
The recovery site's host holds the control plane and serves its vault
(`standby init --site recovery --listen`, `standby serve`); the primary
site's host joins it. This kernel has no netem: a 50 ms round trip is made by
bench/delay_proxy.py in the primary namespace (25 ms each way, 6 MiB in
flight per direction like a TCP connection with Linux's default largest
window), which nftables puts between the primary host and the recovery
host's listener and rsync daemon. Parts (--only, all by default):

  sync: initial replication of the 2 GiB real-filesystem image of
    bench/disk.py across the link (standby sync into standby://, through the
    recovery host's listener: TLS, encrypted packs) vs rsync of the image to
    an rsync:// daemon in the other namespace vs the same standby sync into a
    local encrypted vault; direct, through the proxy without delay, and
    through it with 25 ms each way (the ratio of the last two is the cost of
    the round trip)
  limit: [sites.recovery] max_bandwidth set while the host serves, the
    measured rate of incompressible data against it
  rpo: a splitter (serve-disk) at the primary host replicating into the
    recovery host's vault while an NBD client writes random 64 KiB blocks at
    100 MB/s for 20 s; its lag (the age of the oldest change not yet sealed)
    sampled every 100 ms: p50, p99, max, and the drain after the last write;
    without and with the 50 ms round trip
  failover: the test guest at the primary host on a 1 GiB and an 8 GiB disk,
    protected; every process of the primary host SIGKILLed and the link cut;
    `standby failover --shutdown-source` at the recovery host: the command's
    wall time to the recovery VM's QEMU running, and the job's own record

Rounds alternate the tools (--rounds, default 3) with fresh targets each
time, so the ratios compare work, not the page cache. Needs root (ip netns,
nft), rsync, python3-libnbd, qemu-system-x86, the test guest (built by
scripts/test) and a release build (cargo build --release -p standby-cli).

Usage: bench/hosts.py [--size-gib 2] [--rounds 3] [--work DIR] [--limit-mib 50] [--only sync,limit,rpo,failover]
"""
import argparse
import importlib.util
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
ROOT = Path(__file__).resolve().parent.parent
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


class Delay:
    """Every connection from the primary host to the recovery host's
    listener and rsync daemon through bench/delay_proxy.py, `ms` late in
    each direction (this kernel has no netem): nftables redirects them to
    the proxies in the primary namespace, whose own connections carry mark
    1, which the rule lets pass."""

    PROXY = Path(__file__).resolve().parent / "delay_proxy.py"

    def __init__(self, ms):
        self.proxies = []
        nft = ("nft",)
        sh(*nft, "add", "table", "ip", "delay", netns=PRIMARY)
        sh(*nft, "add", "chain", "ip", "delay", "out", "{ type nat hook output priority -100; }", netns=PRIMARY)
        for port in (LISTEN_PORT, RSYNC_PORT):
            local = port + 10000
            sh(*nft, "add", "rule", "ip", "delay", "out", "ip", "daddr", RECOVERY_IP, "tcp", "dport", port, "meta",
               "mark", "!=", "1", "redirect", "to", f":{local}", netns=PRIMARY)
            self.proxies.append(subprocess.Popen(
                ["ip", "netns", "exec", PRIMARY, sys.executable, str(self.PROXY), "--listen", f"127.0.0.1:{local}",
                 "--to", f"{RECOVERY_IP}:{port}", "--delay-ms", str(ms), "--mark", "1"]))
        time.sleep(1)

    def stop(self):
        sh("nft", "delete", "table", "ip", "delay", netns=PRIMARY, check=False)
        for proxy in self.proxies:
            proxy.kill()
            proxy.wait()


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
        self.daemon = serve(RECOVERY, self.recovery_home, self.log)
        self.agent = None
        sh(STANDBY, "join", self.primary_home, "--site", "primary", "--control", f"https://{listen}",
           "--join-token", made["join_token"], "--listen", f"{PRIMARY_IP}:{LISTEN_PORT}", netns=PRIMARY)
        self.vault = f"standby://{listen}/recovery"

    def serve_primary(self):
        """The primary host's agent, serving."""
        self.agent_log = open(self.work / "primary.log", "w")
        self.agent = serve(PRIMARY, self.primary_home, self.agent_log)

    def control(self, *arguments):
        """A command at the control plane's host (the recovery site's)."""
        return sh(STANDBY, *arguments, "--home", self.recovery_home, netns=RECOVERY)

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
        """Kills the deployment's processes (daemons, and the machines and
        helpers they started), not the rest of each namespace."""
        subprocess.run(["pkill", "-9", "-f", str(self.work)], capture_output=True)
        self.daemon.kill()
        self.daemon.wait()
        self.log.close()
        if self.agent:
            self.agent.kill()
            self.agent.wait()
            self.agent_log.close()


def serve(netns, home, log):
    """`standby serve` of `home` in `netns` (guests under TCG), once it listens."""
    daemon = subprocess.Popen(["ip", "netns", "exec", netns, str(STANDBY), "serve", "--home", str(home)],
                              stdout=log, stderr=log, env={**os.environ, "STANDBY_ACCEL": "tcg"})
    deadline = time.time() + 30
    while not (home / "run" / "standby.sock").exists():
        if time.time() > deadline or daemon.poll() is not None:
            sys.exit(f"the host in {netns} never served: see {log.name}")
        time.sleep(0.1)
    time.sleep(0.5)
    return daemon


def kill_host(netns):
    """Every process of the "host" `netns`, SIGKILLed at once."""
    pids = sh("ip", "netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass


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
    delay = Delay(delay_ms) if delay_ms is not None else None
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
        if delay:
            delay.stop()
    return statistics.median(remote), statistics.median(local), statistics.median(rsync)


def folder_bytes(folder):
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def bandwidth(work, limit_mib):
    """The rate at which 512 MiB of incompressible data lands in the
    recovery host's vault under the limit: the command's whole time, and
    the steady rate (the vault's growth sampled every 0.25 s, between a
    tenth and nine tenths of the bytes, which leaves out the start: the
    TLS handshake and the first hashing, when nothing crosses yet)."""
    import threading
    data = work / "random.img"
    with open(data, "wb") as f:
        f.write(os.urandom(512 << 20))
    hosts = Hosts(work / "hosts")
    vault = hosts.recovery_home / "sites" / "recovery" / "vault"
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.perf_counter(), folder_bytes(vault)))
            time.sleep(0.25)

    try:
        hosts.set_limit(f"{limit_mib}MiB/s")
        start = folder_bytes(vault)
        sampler = threading.Thread(target=sample)
        sampler.start()
        seconds, stored = hosts.sync(data, "limited")
        done.set()
        sampler.join()
        grown = [(t, size - start) for t, size in samples]
        first = next((t, b) for t, b in grown if b >= stored * 0.1)
        last = next((t, b) for t, b in grown if b >= stored * 0.9)
        steady = (last[1] - first[1]) / (last[0] - first[0])
        return stored / seconds / (1 << 20), steady / (1 << 20)
    finally:
        hosts.stop()
        data.unlink()


def bench_module(name):
    """bench/NAME.py, for its helpers (splitter: the NBD writer and lag
    sampler; lifecycle: the test guest and a job's timing)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rpo(work, delay_ms, seconds=20, rate=100_000_000):
    """Lag samples (s) of a splitter at the primary host replicating into
    the recovery host's vault across the link while an NBD client writes
    random 64 KiB blocks at `rate` bytes/s for `seconds` (the guest's
    part), and the time from the last write to everything sealed."""
    sp = bench_module("splitter")
    hosts = Hosts(work / "hosts")
    delay = Delay(delay_ms) if delay_ms is not None else None
    image = hosts.work / "primary" / "rpo.img"
    sp.fresh_image(image, sp.GIB)
    socket = str(hosts.work / "primary" / "rpo.sock")
    env = {**os.environ, "STANDBY_TLS_DIR": str(hosts.primary_home / "tls")}
    splitter = subprocess.Popen(
        ["ip", "netns", "exec", PRIMARY, str(STANDBY), "serve-disk", str(image), "--socket", socket, "--vault",
         hosts.vault, "--key-file", str(hosts.primary_home / "keys" / "recovery.key"), "--disk", "rpo",
         "--seal-interval", "1s"], env=env, stderr=subprocess.DEVNULL)
    try:
        sp.wait_for_socket(socket)
        sp.wait_caught_up(socket)
        sampler = sp.LagSampler(socket)
        sp.random_writes(f"nbd+unix:///rpo?socket={socket}", seconds * rate // 65536, rate=rate)
        ended = time.perf_counter()
        sp.wait_caught_up(socket)
        drain = time.perf_counter() - ended
        return sampler.stop(), drain
    finally:
        splitter.kill()
        splitter.wait()
        if delay:
            delay.stop()
        hosts.stop()
        image.unlink()


def guest_disk(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["/sbin/mke2fs", "-q", "-F", "-t", "ext4", path, f"{240 * 1024}k"], check=True)


def failover_primary_dead(work, size):
    """The test guest on a `size`-byte disk at the primary host, protected
    into the recovery host; every process of the primary host SIGKILLed and
    the link cut; `standby failover --shutdown-source` at the recovery
    host's control plane: wall seconds from the command to its return (the
    recovery VM's QEMU running), and the job's own record of it."""
    make_link()
    hosts = Hosts(work / "hosts")
    try:
        hosts.serve_primary()
        lifecycle = bench_module("lifecycle")
        kernel, initramfs = lifecycle.test_guest()
        image = hosts.work / "primary" / "guest.raw"
        guest_disk(image, size)
        append = "console=ttyS0 quiet loglevel=3 panic=-1 standby.count=0 standby.interval=0.100 standby.file_kib=4"
        hosts.control("machine", "add", "web", "--disk", image, "--kernel", kernel, "--initrd", initramfs, "--append",
                      append)
        hosts.control("machine", "start", "web")
        console = hosts.primary_home / "run" / "machines" / "web@primary" / "web@primary.console"
        deadline = time.time() + 180
        while b"standby-guest: record 3" not in (console.read_bytes() if console.exists() else b""):
            if time.time() > deadline:
                sys.exit("the test guest did not start writing at the primary host")
            time.sleep(0.2)
        hosts.control("protect", "web")
        time.sleep(3)
        kill_host(PRIMARY)
        sh("ip", "-n", PRIMARY, "link", "set", "vbench-p", "down")
        started = time.perf_counter()
        job = json.loads(hosts.control("failover", "web", "--shutdown-source", "--json").stdout)
        wall = time.perf_counter() - started
        if job["state"] != "succeeded":
            sys.exit(f"the failover did not succeed: {job}")
        return wall, lifecycle.job_seconds(job), job
    finally:
        hosts.stop()


def percentile(samples, fraction):
    return samples[min(len(samples) - 1, int(len(samples) * fraction))] if samples else 0


PARTS = ("sync", "limit", "rpo", "failover")


def sync_rows(args, image):
    size_mib = image.stat().st_size / (1 << 20)
    rows, figures = [], {}
    for label, delay in (("direct", None), ("through the proxy, no delay", 0), ("proxy, 25 ms each way", 25)):
        remote, local, rsync = measure(args.work, image, args.rounds, delay)
        figures[delay] = remote
        rows.append((f"initial replication, {label}", size_mib / remote, size_mib / rsync, size_mib / local))
    print(f"\n{size_mib:.0f} MiB image, median of {args.rounds} alternating rounds (MiB/s of image):")
    print(f"{'':48} {'standby://':>10} {'rsync://':>10} {'local':>10} {'vs rsync':>9} {'vs local':>9}")
    for name, remote, rsync, local in rows:
        print(f"{name:48} {remote:10.0f} {rsync:10.0f} {local:10.0f} {remote / rsync:8.2f}x {remote / local:8.2f}x")
    print(f"throughput with a 50 ms round trip: {figures[0] / figures[25]:.2f}x of that without (target 0.8x)")


def rpo_rows(args):
    print("\nRPO: random 64 KiB writes at 100 MB/s for 20 s into a splitter at the primary host, replicating into")
    print("the recovery host's vault; lag sampled every 100 ms (s):")
    print(f"{'':36} {'p50':>6} {'p99':>6} {'max':>6} {'drain':>6}")
    for label, delay in (("through the proxy, no delay", 0), ("proxy, 25 ms each way", 25)):
        samples, drain = rpo(args.work, delay)
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"{label:36} {p50:6.2f} {p99:6.2f} {max(samples or [0]):6.2f} {drain:6.2f}   (target p99 <= 2 s)")


FAILOVER_ROUNDS = 3


def failover_rows(args):
    print("\nFailover with the primary host dead (SIGKILL, link down), the test guest under TCG, release build;")
    print(f"median of {FAILOVER_ROUNDS} (a fresh deployment each), samples beside:")
    print(f"{'disk':>6} {'command (s)':>12} {'job (s)':>8}")
    slowest = None
    for gib in (1, 8):
        walls, jobs = [], []
        for _ in range(FAILOVER_ROUNDS):
            wall, seconds, job = failover_primary_dead(args.work, gib << 30)
            walls.append(wall)
            jobs.append(seconds)
            if slowest is None or wall > slowest[0]:
                slowest = (wall, gib, job)
        samples = " ".join(f"{w:.2f}" for w in walls)
        print(f"{gib:4} GiB {statistics.median(walls):12.2f} {statistics.median(jobs):8.2f}   [{samples}]"
              f"   (target <= 2 s, independent of disk size)")
    wall, gib, job = slowest
    print(f"the slowest ({wall:.2f} s, {gib} GiB), step by step:")
    for step in job["steps"]:
        print(f"  {step['name']}: {step['detail']}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/standby-bench-hosts"))
    parser.add_argument("--limit-mib", type=int, default=50)
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    args = parser.parse_args()
    parts = args.only.split(",")
    if not STANDBY.exists():
        sys.exit(f"{STANDBY} is missing: cargo build --release -p standby-cli")
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        if "sync" in parts:
            image = disk.build_image(args.work, args.size_gib)
            make_link()
            sync_rows(args, image)
        if "limit" in parts:
            make_link()
            whole, steady = bandwidth(args.work, args.limit_mib)
            print(f"\nbandwidth limit {args.limit_mib} MiB/s (target: within 5%):")
            for label, rate in (("the command's whole time", whole), ("steady (10% to 90% of the bytes)", steady)):
                print(f"  {label:36} {rate:6.1f} MiB/s ({(rate / args.limit_mib - 1) * 100:+.1f}%)")
        if "rpo" in parts:
            make_link()
            rpo_rows(args)
        if "failover" in parts:
            failover_rows(args)
    finally:
        for netns in (PRIMARY, RECOVERY):
            sh("ip", "netns", "del", netns, check=False)


if __name__ == "__main__":
    main()
