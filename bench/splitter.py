#!/usr/bin/python3
"""Splitter benchmark: Standby's serve-disk beside qemu-nbd, in one run.

Needs Debian's python3 with python3-libnbd (the NBD client library's
bindings), nbdcopy (libnbd-bin) and qemu-nbd (qemu-utils):
    apt-get install python3-libnbd libnbd-bin qemu-utils

Measures, on the same data and the same client:
  1. sequential write: nbdcopy of 1 GiB of a real ext4 image into the export
     (guest-facing throughput), and for the splitter the time until every
     byte is sealed in the local vault (replication throughput);
  2. random 64 KiB writes, queue depth 16, 512 MiB over a 1 GiB export;
  3. replication lag under a sustained 100 MB/s of random 64 KiB writes for
     20 s: the age of the oldest change not yet in the vault, sampled every
     100 ms (an upper bound on every write's ack-to-restorable time), p50,
     p99 and max, and the splitter's peak memory;
  3b. sustained replication with the guest writing: the 2 GiB real image
     written in order (1 MiB requests, queue depth 8) at paced rates of 150
     and 300 MB/s and unpaced; lag sampled as in 3, the time from the last
     write to all sealed, the splitter's peak memory;
  4. export: time from `standby export` to the first 4 KiB read served, for a
     1 GiB and an 8 GiB disk;
  5. replication throughput with the guest idle: the splitter's initial
     replication of the 1 GiB image into an empty local vault (start to all
     sealed) beside `zstd -1 -T2` of the same file (the compression bound);
  6. checks (only with --baseline BIN, a standby built from an earlier
     commit): the cost of what was added to the hot path since, this build
     beside that one in alternating rounds: random 64 KiB guest writes
     (qd 16), nbdcopy of 1 GiB to all sealed, and the initial replication of
     1 GiB (vault puts); the ratio beside the baseline's own spread.

Usage: bench/splitter.py [--work DIR] [--keep] [--only seq,rand,lag,sustained,export,initial,checks]
                         [--baseline BIN] [--rounds N]
"""
import argparse
import importlib.util
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
GIB = 1 << 30


def load_disk_module():
    spec = importlib.util.spec_from_file_location("disk", ROOT / "bench" / "disk.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_for_socket(path, timeout=60):
    """Waits until something accepts connections on the unix socket `path`."""
    import socket as sockets
    deadline = time.time() + timeout
    while True:
        probe = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError:
            if time.time() > deadline:
                sys.exit(f"nothing listens on {path}")
            time.sleep(0.01)
        finally:
            probe.close()


def status(socket):
    out = subprocess.run([STANDBY, "splitter-status", "--socket", socket, "--json"], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def wait_caught_up(socket, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = status(socket)
        if s and s["refreshed"] and s["lag_bytes"] == 0 and s["catch_up_bytes"] == 0 and s["lag_seconds"] == 0:
            return
        time.sleep(0.05)
    sys.exit(f"the splitter on {socket} did not catch up in {timeout} s")


def peak_rss(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


class Splitter:
    def __init__(self, work, image, name, seal="1s", binary=None):
        binary = binary or STANDBY
        self.socket = str(work / f"{name}.sock")
        self.vault = work / f"{name}-vault"
        shutil.rmtree(self.vault, ignore_errors=True)
        subprocess.run([binary, "vault", "init", self.vault], check=True, capture_output=True)
        self.process = subprocess.Popen(
            [binary, "serve-disk", image, "--socket", self.socket, "--vault", self.vault, "--disk", "d",
             "--seal-interval", seal], stderr=subprocess.DEVNULL)
        wait_for_socket(self.socket)
        wait_caught_up(self.socket)
        self.uri = f"nbd+unix:///d?socket={self.socket}"

    def stop(self):
        rss = peak_rss(self.process.pid)
        self.process.terminate()
        self.process.wait()
        return rss


class QemuNbd:
    def __init__(self, work, image, name):
        self.socket = str(work / f"{name}.sock")
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.process = subprocess.Popen(
            ["qemu-nbd", "-f", "raw", "-k", self.socket, "--persistent", "--shared", "16", "--cache", "writeback",
             "--aio", "threads", "--discard", "unmap", image], stderr=subprocess.DEVNULL)
        wait_for_socket(self.socket)
        self.uri = f"nbd+unix:///?socket={self.socket}"

    def stop(self):
        # qemu-nbd --persistent does not always exit on SIGTERM; the client
        # flushed, so nothing is lost.
        self.process.kill()
        self.process.wait()
        return 0


def fresh_image(path, size):
    if path.exists():
        path.unlink()
    with open(path, "wb") as f:
        f.truncate(size)


def random_writes(uri, count, depth=16, size=GIB, rate=None, seed=1):
    """`count` random 64 KiB writes at queue depth `depth`; paced at `rate` bytes/s when given."""
    handle = nbd.NBD()
    handle.connect_uri(uri)
    rng = random.Random(seed)
    payload = bytearray(rng.randbytes(65536))
    buffer = nbd.Buffer.from_bytearray(payload)
    blocks = size // 65536
    started = time.perf_counter()
    issued = 0
    failed = []

    def completed(error):
        if error.value:
            failed.append(error.value)
        return 1  # retire the command

    while issued < count or handle.aio_in_flight() > 0:
        while issued < count and handle.aio_in_flight() < depth:
            if rate and issued * 65536 > (time.perf_counter() - started) * rate:
                break
            payload[0:8] = issued.to_bytes(8, "little")
            handle.aio_pwrite(buffer, rng.randrange(blocks) * 65536, completion=completed)
            issued += 1
        if handle.aio_in_flight() > 0:
            handle.poll(1)
        elif rate and issued < count:
            time.sleep(0.0005)
    return finish(handle, failed, started)


def finish(handle, failed, started):
    """After the last request: fails on any failed one, flushes, and returns
    the seconds since `started`."""
    if failed:
        sys.exit(f"{len(failed)} writes failed (errno {failed[0]})")
    handle.flush()
    elapsed = time.perf_counter() - started
    handle.shutdown()
    return elapsed


class LagSampler:
    """Samples a splitter's lag (the age of its oldest change not yet
    sealed) every 100 ms on a thread, from start to `stop()`."""

    def __init__(self, socket):
        import threading
        self.samples = []
        self.done = threading.Event()

        def sample():
            while not self.done.is_set():
                st = status(socket)
                if st:
                    self.samples.append(st["lag_seconds"])
                time.sleep(0.1)

        self.thread = threading.Thread(target=sample)
        self.thread.start()

    def stop(self):
        """Stops sampling; returns the samples, sorted."""
        self.done.set()
        self.thread.join()
        return sorted(self.samples)


def paced_copy(uri, source, rate, block=1 << 20, depth=8):
    """Writes `source` into the export in order, `block` bytes a request at
    queue depth `depth`, paced at `rate` bytes/s; all-zero blocks go as
    write-zeroes (as nbdcopy sends them). Returns the seconds taken."""
    handle = nbd.NBD()
    handle.connect_uri(uri)
    size = os.path.getsize(source)
    started = time.perf_counter()
    failed = []

    def completed(error):
        if error.value:
            failed.append(error.value)
        return 1

    with open(source, "rb") as f:
        offset = 0
        while offset < size:
            if offset > (time.perf_counter() - started) * rate:
                if handle.aio_in_flight() > 0:
                    handle.poll(0)
                time.sleep(0.0005)
                continue
            while handle.aio_in_flight() >= depth:
                handle.poll(1)
            data = f.read(block)
            if data.count(0) == len(data):
                handle.aio_zero(len(data), offset, completion=completed)
            else:
                handle.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), offset, completion=completed)
            offset += len(data)
    while handle.aio_in_flight() > 0:
        handle.poll(1)
    return finish(handle, failed, started)


def sustained(work, source, rate):
    """The real image written at `rate`: lag samples (s), the write time, and
    the time from the last write to everything sealed."""
    image = work / "sustained.img"
    fresh_image(image, os.path.getsize(source))
    os.sync()
    s = Splitter(work, image, "sustained")
    sampler = LagSampler(s.socket)
    elapsed = paced_copy(s.uri, source, rate)
    ended = time.perf_counter()
    wait_caught_up(s.socket)
    drain = time.perf_counter() - ended
    samples = sampler.stop()
    rss = s.stop()
    image.unlink()
    return samples, elapsed, drain, rss


def hot_path_checks(work, source, image, baseline, rounds):
    """For each workload and build, the MB/s of every round."""
    builds = [("this build", STANDBY), ("baseline", baseline)]
    rates = {}

    def measure(workload, build, binary):
        if workload == "guest writes (random 64 KiB, qd 16)":
            fresh_image(image, GIB)
            os.sync()
            s = Splitter(work, image, "checks", binary=binary)
            rate = 8192 * 65536 / random_writes(s.uri, 8192)
        elif workload == "nbdcopy 1 GiB to all sealed":
            fresh_image(image, GIB)
            os.sync()
            s = Splitter(work, image, "checks", binary=binary)
            started = time.perf_counter()
            subprocess.run(["nbdcopy", "--flush", source, s.uri], check=True)
            wait_caught_up(s.socket)
            rate = GIB / (time.perf_counter() - started)
        else:
            shutil.copyfile(source, image)
            os.sync()
            started = time.perf_counter()
            s = Splitter(work, image, "checks", binary=binary)
            rate = GIB / (time.perf_counter() - started)
        s.stop()
        rates.setdefault((workload, build), []).append(rate)

    for round in range(rounds):
        order = builds if round % 2 == 0 else builds[::-1]
        for workload in CHECK_WORKLOADS:
            for build, binary in order:
                measure(workload, build, binary)
    return rates


CHECK_WORKLOADS = ["guest writes (random 64 KiB, qd 16)", "nbdcopy 1 GiB to all sealed",
                   "initial replication (vault puts)"]


def print_checks(rates, baseline, rounds):
    """This build's median beside the baseline's; within noise when the ratio
    lies inside the baseline's own spread (its slowest to fastest round over
    its median), and never under 0.95 counted as noise."""
    print(f"\nhot-path checks: this build ({STANDBY}) beside the baseline ({baseline}), {rounds} alternating rounds")
    print(f"{'workload':<38}{'this MB/s':>10}{'base MB/s':>10}{'ratio':>7}{'base spread':>14}  within noise")
    for workload in CHECK_WORKLOADS:
        ours, theirs = rates[(workload, "this build")], rates[(workload, "baseline")]
        median_ours, median_theirs = statistics.median(ours), statistics.median(theirs)
        ratio = median_ours / median_theirs
        low, high = min(theirs) / median_theirs, max(theirs) / median_theirs
        within = min(low, 0.95) <= ratio
        print(f"{workload:<38}{median_ours / 1e6:>10.0f}{median_theirs / 1e6:>10.0f}{ratio:>6.2f}x"
              f"{f'{low:.2f}-{high:.2f}x':>14}  {'yes' if within else 'NO'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--only", default=None,
                        help="comma-separated sections to run (default: all; checks only with --baseline)")
    parser.add_argument("--baseline", help="a standby binary built from an earlier commit, for the checks section")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the checks section (default 5)")
    arguments = parser.parse_args()
    if arguments.only is None:
        arguments.only = "seq,rand,lag,sustained,export,initial" + (",checks" if arguments.baseline else "")
    if "checks" in arguments.only.split(",") and not arguments.baseline:
        sys.exit("the checks section compares with an earlier build: give --baseline BIN")
    if arguments.baseline and not os.access(arguments.baseline, os.X_OK):
        sys.exit(f"--baseline {arguments.baseline}: not an executable file; build the commit to compare with "
                 f"(git worktree add /tmp/base COMMIT && cargo build --release -p standby-cli there)")
    for tool in ["nbdcopy", "qemu-nbd", "qemu-io", "zstd"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install libnbd-bin qemu-utils")
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "standby-cli"], cwd=ROOT, check=True)
    work = Path(arguments.work)
    work.mkdir(parents=True, exist_ok=True)
    built = load_disk_module().build_image(work, 2.0)
    source = work / "source-1g.img"
    if not source.exists():
        with open(built, "rb") as f, open(source, "wb") as out:
            out.write(f.read(GIB))
    image = work / "target.img"
    results = {}

    only = set(arguments.only.split(","))
    # 1. Sequential: nbdcopy of 1 GiB into each export.
    if "seq" in only:
        for name, server in [("qemu-nbd", QemuNbd), ("standby", Splitter)]:
            times = []
            for _ in range(3):
                fresh_image(image, GIB)
                os.sync()
                s = server(work, image, name)
                started = time.perf_counter()
                subprocess.run(["nbdcopy", "--flush", source, s.uri], check=True)
                copied = time.perf_counter() - started
                if name == "standby":
                    wait_caught_up(s.socket)
                    results.setdefault("replicated", []).append(time.perf_counter() - started)
                s.stop()
                times.append(copied)
            results[f"seq_{name}"] = statistics.median(times)
        if subprocess.run(["cmp", "-s", source, image]).returncode != 0:
            sys.exit("the splitter's image differs from what nbdcopy wrote")

    # 2. Random 64 KiB writes, queue depth 16.
    if "rand" in only:
        for name, server in [("qemu-nbd", QemuNbd), ("standby", Splitter)]:
            times = []
            for _ in range(3):
                fresh_image(image, GIB)
                os.sync()
                s = server(work, image, name)
                times.append(random_writes(s.uri, 8192))
                s.stop()
            results[f"rand_{name}"] = statistics.median(times)

    # 3. Lag at a sustained 100 MB/s.
    if "lag" in only:
        fresh_image(image, GIB)
        s = Splitter(work, image, "lag")
        sampler = LagSampler(s.socket)
        rate = 100_000_000
        writes = int(rate * 20 / 65536)
        elapsed = random_writes(s.uri, writes, rate=rate, seed=2)
        wait_caught_up(s.socket)
        samples = sampler.stop()
        lag_rss = s.stop()
        achieved = writes * 65536 / elapsed

    # 3b. Sustained replication with the guest writing: the 2 GiB real
    # image written in order at paced rates; the vault kept pace when
    # everything is sealed within 2 s of the last write.
    if "sustained" in only:
        sustained_rows = []
        for rate in [150e6, 300e6, 1000e6]:
            lags, took, drain, rss = sustained(work, built, rate)
            p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else 0
            sustained_rows.append((rate, os.path.getsize(built) / took, lags[len(lags) // 2] if lags else 0, p99,
                                   lags[-1] if lags else 0, drain, rss, drain <= 2))

    # 4. Export: time to the first read, 1 GiB and 8 GiB disks.
    if "export" in only:
        export_times = {}
        for size_gib in [1, 8]:
            disk = work / f"export-{size_gib}g.img"
            fresh_image(disk, size_gib * GIB)
            with open(disk, "r+b") as f:
                rng = random.Random(size_gib)
                for _ in range(256):
                    f.seek(rng.randrange(size_gib * GIB // 65536) * 65536)
                    f.write(rng.randbytes(65536))
            sp = Splitter(work, disk, f"export{size_gib}")
            sp.stop()
            times = []
            for attempt in range(3):
                socket = str(work / f"exp{size_gib}-{attempt}.sock")
                overlay = Path(socket + ".overlay")
                if overlay.exists():
                    overlay.unlink()
                started = time.perf_counter()
                p = subprocess.Popen([STANDBY, "export", "--vault", sp.vault, "--disk", "d", "--point", "latest",
                                      "--socket", socket], stderr=subprocess.DEVNULL)
                handle = None
                while handle is None:
                    try:
                        h = nbd.NBD()
                        h.connect_uri(f"nbd+unix:///d?socket={socket}")
                        handle = h
                    except nbd.Error:
                        time.sleep(0.005)
                handle.pread(4096, 0)
                times.append(time.perf_counter() - started)
                handle.shutdown()
                p.terminate()
                p.wait()
            export_times[size_gib] = statistics.median(times)

    # 5. Replication with the guest idle: initial replication vs zstd -1 -T2.
    if "initial" in only:
        initial, zstd = [], []
        for _ in range(3):
            shutil.copyfile(source, image)
            os.sync()
            started = time.perf_counter()
            s = Splitter(work, image, "initial")
            wait_caught_up(s.socket)
            initial.append(time.perf_counter() - started)
            s.stop()
            os.sync()
            started = time.perf_counter()
            subprocess.run(["zstd", "-1", "-T2", "-q", "-f", source, "-o", str(work / "source.zst")], check=True)
            zstd.append(time.perf_counter() - started)

    # 6. The checks added to the hot path: this build beside the baseline,
    # alternating which goes first, the same image and client each round.
    if "checks" in only:
        checks = hot_path_checks(work, source, image, Path(arguments.baseline), arguments.rounds)

    print(f"\n1 GiB of a real ext4 image; median of 3 runs; {os.cpu_count()} cores\n")
    rows = []
    if "seq" in only:
        seq_ratio = results["seq_qemu-nbd"] / results["seq_standby"]
        rows.append(("nbdcopy 1 GiB (write)", GIB / results["seq_standby"], GIB / results["seq_qemu-nbd"], seq_ratio,
                     ">= 0.8x", seq_ratio >= 0.8))
    if "rand" in only:
        rand_ratio = results["rand_qemu-nbd"] / results["rand_standby"]
        rows.append(("random 64 KiB, qd 16", 8192 * 65536 / results["rand_standby"],
                     8192 * 65536 / results["rand_qemu-nbd"], rand_ratio, ">= 0.8x", rand_ratio >= 0.8))
    print(f"{'workload':<24}{'standby MB/s':>14}{'qemu-nbd MB/s':>15}{'ratio':>8}  target    met")
    for name, ours, theirs, ratio, target, met in rows:
        print(f"{name:<24}{ours / 1e6:>14.0f}{theirs / 1e6:>15.0f}{ratio:>7.2f}x  {target:<9} {'yes' if met else 'NO'}")
    if "seq" in only:
        replicated = GIB / statistics.median(results["replicated"])
        print(f"\nreplication into a local vault (nbdcopy start to all sealed): {replicated / 1e9:.2f} GB/s "
              f"(target >= 0.5 GB/s: {'yes' if replicated >= 0.5e9 else 'NO'})")
    if "lag" in only:
        p50 = samples[len(samples) // 2] if samples else 0
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] if samples else 0
        print(f"lag at {achieved / 1e6:.0f} MB/s of random 64 KiB writes for {elapsed:.0f} s: p50 {p50:.2f} s, "
              f"p99 {p99:.2f} s, max {samples[-1] if samples else 0:.2f} s ({len(samples)} samples; target p99 <= 2 s: "
              f"{'yes' if p99 <= 2 else 'NO'}); splitter peak memory {lag_rss / (1 << 20):.0f} MiB")
    if "sustained" in only:
        print(f"\nsustained replication, the {os.path.getsize(built) >> 30} GiB real image written in order "
              f"(1 MiB requests, qd 8) at a paced rate:")
        print(f"{'asked MB/s':>11}{'written MB/s':>13}{'lag p50 s':>10}{'p99 s':>7}{'max s':>7}{'drain s':>8}"
              f"{'peak MiB':>9}  kept pace (drain <= 2 s)")
        for rate, achieved, p50, p99, worst, drain, rss, kept in sustained_rows:
            print(f"{rate / 1e6:>11.0f}{achieved / 1e6:>13.0f}{p50:>10.2f}{p99:>7.2f}{worst:>7.2f}{drain:>8.2f}"
                  f"{rss / (1 << 20):>9.0f}  {'yes' if kept else 'NO'}")
        print()
    if "initial" in only:
        initial_rate, zstd_rate = GIB / statistics.median(initial), GIB / statistics.median(zstd)
        print(f"initial replication into a local vault, guest idle: {initial_rate / 1e9:.2f} GB/s beside zstd -1 -T2 "
              f"{zstd_rate / 1e9:.2f} GB/s = {initial_rate / zstd_rate:.2f}x (target >= 0.5 GB/s where zstd does "
              f"0.67: {'yes' if initial_rate >= 0.5e9 else 'NO'} absolute, "
              f"{'yes' if initial_rate / zstd_rate >= 0.75 else 'NO'} relative (>= 0.75x))")
    if "export" in only:
        one, eight = export_times[1], export_times[8]
        print(f"export to first read: 1 GiB {one * 1000:.0f} ms, 8 GiB {eight * 1000:.0f} ms "
              f"(target <= 1 s and independent of size: {'yes' if max(one, eight) <= 1 else 'NO'})")
    if "checks" in only:
        print_checks(checks, arguments.baseline, arguments.rounds)
    if not arguments.keep:
        for path in work.glob("*"):
            if path.name != "built.img":
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()


if __name__ == "__main__":
    main()
