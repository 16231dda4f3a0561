#!/usr/bin/python3
"""Console benchmark (issue 17): the API and console with a fleet, and the cost of watching.

Parts (--only, all by default):

  fleet: a deployment seeded with 1000 protected machines of 3 disks each,
    every disk's journal holding 2 hours of history (a bookmark every 5 s,
    a write a minute, an app-consistent point an hour:
    crates/control/examples/fleet.rs), and machine `week` with a week of it
    under a 7-day-retention policy. `standby serve --listen` (TLS), then
    `oha` with 50 concurrent clients on `GET /v1/status` (every machine),
    the console's first page (`/`, all machines) and `week`'s page (its
    timeline of a week of points): p50, p99 and requests per second of each
    against the target p99 <= 100 ms; the first request of each (nothing
    found yet) for reference. The daemon's peak memory (VmHWM) too.
  polling: the test guest (Debian kernel, busybox) protected, writing
    1 MiB files with sync as fast as it can (standby.interval=0); its writes
    per second counted on its console in windows of --window seconds,
    alternately with nothing polling and with a console session and a
    Prometheus scraper each fetching every second (`/`, the machine's page,
    `/metrics`): the ratio of the medians against the target >= 0.95.

Needs root, /usr/bin/python3 with python3-libnbd (it takes lifecycle.py's
test guest lookup), qemu-system-x86 (polling), the test guest built once by
scripts/test, `oha` (installed here with `cargo install oha --locked` when
missing) and a release build (made here: cargo build --release -p
standby-cli -p standby-control --example fleet). The bench's throwaway
tokens go to oha on its command line (oha reads headers from nowhere else);
the deployment is deleted at the end.

Usage: bench/console.py [--work DIR] [--machines 1000] [--seconds 20] [--window 20] [--rounds 6] [--only fleet,polling]
"""
import argparse
import http.cookiejar
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lifecycle import test_guest  # noqa: E402  (the test guest's kernel and initramfs)

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
STANDBY = Path(os.environ.get("STANDBY_BIN", RELEASE / "standby"))
FLEET = RELEASE / "examples" / "fleet"
MIB = 1 << 20
TARGET_P99_MS = 100.0
TARGET_RATIO = 0.95
GUEST_DISK = 6 * 1024 * MIB


def standby(*arguments):
    out = subprocess.run([STANDBY, *map(str, arguments)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"standby {' '.join(map(str, arguments))} failed: {out.stderr.strip()}")
    return out.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def oha_binary():
    found = shutil.which("oha") or (Path.home() / ".cargo" / "bin" / "oha")
    if not Path(found).exists():
        print("installing oha (cargo install oha --locked)", flush=True)
        subprocess.run(["cargo", "install", "oha", "--locked", "--quiet"], check=True)
    return str(found)


class Served:
    """`standby serve --listen` for `home`, with an admin token and a console session."""

    def __init__(self, home, log_path):
        self.home = home
        self.listen = f"127.0.0.1:{free_port()}"
        self.url = f"https://{self.listen}"
        self.log = open(log_path, "w")
        environment = dict(os.environ, STANDBY_ACCEL="tcg")
        self.daemon = subprocess.Popen([STANDBY, "serve", "--home", home, "--listen", self.listen],
                                       env=environment, stderr=self.log)
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(self.listen.split(":")[1])), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or self.daemon.poll() is not None:
                    sys.exit(f"the daemon did not start: see {log_path}")
                time.sleep(0.1)
        # The deployment's CA exists once the daemon serves operators.
        self.context = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))
        self.context.check_hostname = False
        token_file = home / "bench.token"
        standby("token", "create", "bench", "--file", token_file, "--home", home)
        self.token = json.loads(token_file.read_text())["token"]
        self.cookie = self.sign_in()

    def sign_in(self):
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.context),
                                             urllib.request.HTTPCookieProcessor(jar))
        body = urllib.parse.urlencode({"token": self.token}).encode()
        request = urllib.request.Request(self.url + "/login", data=body, headers={"Origin": self.url})
        opener.open(request).read()
        cookies = [f"{c.name}={c.value}" for c in jar]
        if not cookies:
            sys.exit("signing in to the console gave no session cookie")
        return "; ".join(cookies)

    def get(self, path, api=False):
        headers = {"Authorization": f"Bearer {self.token}"} if api else {"Cookie": self.cookie}
        request = urllib.request.Request(self.url + path, headers=headers)
        with urllib.request.urlopen(request, context=self.context) as answer:
            return answer.read()

    def peak_memory_mib(self):
        for line in Path(f"/proc/{self.daemon.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        subprocess.run(["pkill", "-f", str(self.home)], capture_output=True)
        self.daemon.terminate()
        self.daemon.wait()
        self.log.close()


def load(oha, served, path, api, seconds, clients=50):
    header = f"Authorization: Bearer {served.token}" if api else f"Cookie: {served.cookie}"
    out = subprocess.run(
        [oha, "--no-tui", "--output-format", "json", "--insecure", "-c", str(clients), "-z", f"{seconds}s",
         "-H", header, served.url + path],
        capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"oha failed on {path}: {out.stderr.strip()}")
    report = json.loads(out.stdout)
    codes = report.get("statusCodeDistribution", {})
    if set(codes) != {"200"}:
        sys.exit(f"{path} answered {codes}, not only 200")
    percentiles = report["latencyPercentiles"]
    return {"p50": percentiles["p50"] * 1000, "p99": percentiles["p99"] * 1000,
            "rps": report["summary"]["requestsPerSec"], "requests": sum(codes.values())}


def fleet_part(args, work, oha):
    home = work / "fleet"
    shutil.rmtree(home, ignore_errors=True)
    standby("init", home)
    started = time.perf_counter()
    subprocess.run([FLEET, home, str(args.machines), "3", "2"], check=True)
    print(f"seeded {args.machines} machines + week in {time.perf_counter() - started:.0f} s", flush=True)
    served = Served(home, work / "fleet-daemon.log")
    try:
        pages = [("GET /v1/status", "/v1/status", True), ("console /", "/", False),
                 ("console /machines/week", "/machines/week", False)]
        rows = []
        for label, path, api in pages:
            started = time.perf_counter()
            body = served.get(path, api)
            first = (time.perf_counter() - started) * 1000
            figures = load(oha, served, path, api, args.seconds)
            rows.append((label, first, len(body), figures))
        memory = served.peak_memory_mib()
    finally:
        served.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(f"\n{args.machines} machines ({args.machines * 3} disks) + week; oha -c 50 -z {args.seconds}s")
    print(f"{'request':26} {'first ms':>9} {'bytes':>9} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}  target p99")
    for label, first, size, f in rows:
        met = "yes" if f["p99"] <= TARGET_P99_MS else "NO"
        print(f"{label:26} {first:9.0f} {size:9d} {f['p50']:8.1f} {f['p99']:8.1f} {f['rps']:8.0f}  "
              f"<= {TARGET_P99_MS:.0f} ms  {met}")
    print(f"daemon peak memory {memory:.0f} MiB")


def records(console):
    text = console.read_bytes() if console.exists() else b""
    return text.count(b"standby-guest: record ")


class Watchers:
    """A console session and a scraper, each fetching every second, on threads."""

    def __init__(self, served):
        self.served, self.stop_flag, self.fetched, self.threads = served, threading.Event(), 0, []

    def __enter__(self):
        def every_second(paths, api):
            while not self.stop_flag.is_set():
                started = time.time()
                for path in paths:
                    self.served.get(path, api)
                    self.fetched += 1
                self.stop_flag.wait(max(0.0, 1.0 - (time.time() - started)))
        for paths, api in [(["/", "/machines/web"], False), (["/metrics"], True)]:
            thread = threading.Thread(target=every_second, args=(paths, api), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *_):
        self.stop_flag.set()
        for thread in self.threads:
            thread.join()


def polling_part(args, work):
    kernel, initramfs = test_guest()
    disk = work / "polling-guest.raw"
    with open(disk, "wb") as f:
        f.truncate(GUEST_DISK)
    # Room for every file the guest writes in the run (a full filesystem
    # would make its steps records only, and fast).
    subprocess.run(["/sbin/mke2fs", "-q", "-F", "-t", "ext4", disk, f"{GUEST_DISK // 1024 - 24 * 1024}k"], check=True)
    home = work / "polling"
    shutil.rmtree(home, ignore_errors=True)
    standby("init", home)
    append = "console=ttyS0 quiet loglevel=3 panic=-1 standby.count=0 standby.interval=0 standby.file_kib=1024"
    standby("machine", "add", "web", "--disk", disk, "--kernel", kernel, "--initrd", initramfs, "--append", append,
            "--home", home)
    served = Served(home, work / "polling-daemon.log")
    console = home / "run" / "machines" / "web@primary" / "web@primary.console"
    quiet, watched, fetched = [], [], 0
    try:
        standby("machine", "start", "web", "--home", home)
        deadline = time.time() + 180
        while records(console) < 3:
            if time.time() > deadline:
                sys.exit("the test guest did not start writing")
            time.sleep(0.5)
        standby("protect", "web", "--home", home)
        time.sleep(args.window)  # initial replication's tail, settled
        for round_ in range(args.rounds):
            # Each round's pair in turn order, so a drift of the machine
            # (page cache, the vault growing) weighs on both sides alike.
            for polled in ((False, True) if round_ % 2 == 0 else (True, False)):
                before, started = records(console), time.time()
                if polled:
                    with Watchers(served) as watchers:
                        time.sleep(args.window)
                    fetched += watchers.fetched
                else:
                    time.sleep(args.window)
                rate = (records(console) - before) / (time.time() - started)
                (watched if polled else quiet).append(rate)
                print(f"round {round_ + 1} {'polled' if polled else 'quiet ':6}: {rate:.2f} MiB/s", flush=True)
        if b"No space left" in console.read_bytes():
            sys.exit("the guest's filesystem filled up during the run: its rates are not file writes; give it a bigger disk")
    finally:
        served.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
            disk.unlink(missing_ok=True)
    # Each round's polled window against its own quiet one, then the median:
    # the guest's rate drifts by more than 5% between rounds on a shared
    # 2-core machine, a pair's two windows are next to each other.
    ratio = statistics.median(w / q for w, q in zip(watched, quiet))
    met = "yes" if ratio >= TARGET_RATIO else "NO"
    print(f"\nguest writes (1 MiB files, synced), median of {args.rounds} windows of {args.window} s; "
          f"{fetched} pages and scrapes fetched while polled")
    print(f"quiet {statistics.median(quiet):.2f} MiB/s  polled {statistics.median(watched):.2f} MiB/s  "
          f"median of the rounds' ratios {ratio:.3f}  target >= {TARGET_RATIO}  {met}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--only", default="fleet,polling")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    parts = args.only.split(",")
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "standby-cli"], check=True, cwd=ROOT)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "standby-control", "--example", "fleet"],
                   check=True, cwd=ROOT)
    if "fleet" in parts:
        fleet_part(args, work, oha_binary())
    if "polling" in parts:
        polling_part(args, work)


if __name__ == "__main__":
    main()
