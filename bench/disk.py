#!/usr/bin/env python3
"""Disk-level benchmark: Standby beside cp, zstd, b3sum and rsync, in one run.

Builds a 2 GiB raw image holding an ext4 filesystem filled (mke2fs -d) with
real files from this machine's /usr, then measures:

  first sync to a local vault  vs  cp of the image, zstd -1 -T2 of the image
  incremental sync after 1% of the image is rewritten in scattered 64 KiB
  blocks  vs  b3sum of the image (new bytes in the vault too)
  resync of the changed image onto the old copy  vs  rsync --inplace --no-whole-file
  restore of the latest point  vs  cp
  peak memory (max RSS) of every Standby command

Each timing is the median of --repeat runs (default 3); every tool runs on
the same files with the page cache warm, so the ratios compare work, not the
disk. Absolute times on a shared 2-core machine are noisy: read the ratios.

Usage: bench/disk.py [--size-gib 2] [--repeat 3] [--work DIR] [--keep]
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

ROOT = Path(__file__).resolve().parent.parent
STANDBY = ROOT / "target" / "release" / "standby"
SOURCES = ["/usr/share", "/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/include", "/usr/lib/gcc", "/usr/libexec",
           "/usr/sbin", "/usr/lib/python3", "/usr/lib/llvm-14", "/usr/lib/jvm"]


def run_measured(command):
    """Like run, with peak memory from wait4."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        sys.exit(f"{' '.join(map(str, command))} failed: {stderr.decode()[-2000:]}")
    return elapsed, usage.ru_maxrss * 1024, stdout


def median_of(repeat, prepare, command):
    """Median time and max peak memory of `command` over `repeat` runs; `prepare` runs untimed before each."""
    times, peaks, outputs = [], [], []
    for _ in range(repeat):
        if prepare:
            prepare()
        # Nobody pays for the writeback of what ran before.
        os.sync()
        seconds, peak, stdout = run_measured(command)
        times.append(seconds)
        peaks.append(peak)
        outputs.append(stdout)
    return statistics.median(times), max(peaks), outputs[-1]


def du_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def build_image(work, size_gib):
    """The pristine image, built once per work directory (kept with --keep)."""
    image = work / "built.img"
    if image.exists():
        return image
    stage = work / "tree"
    budget = int(size_gib * (1 << 30) * 0.70)
    used = 0
    stage.mkdir(parents=True, exist_ok=True)
    for source in SOURCES:
        if not os.path.isdir(source):
            continue
        size = int(subprocess.run(["du", "-sb", source], capture_output=True, text=True).stdout.split()[0])
        if used + size > budget:
            continue
        target = stage / source.strip("/").replace("/", "_")
        # Hard links where possible (same filesystem), copies otherwise.
        if subprocess.run(["cp", "-al", source, str(target)], capture_output=True).returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["cp", "-a", source, str(target)], check=True, capture_output=True)
        used += size
    print(f"filesystem content: {used / (1 << 30):.2f} GiB of real files from {', '.join(SOURCES)} (as fit)")
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(stage), str(image), f"{int(size_gib * 1024)}M"], check=True)
    shutil.rmtree(stage)
    return image


def rewrite_one_percent(image, seed=42):
    """Rewrites 1% of the image in scattered, 64 KiB-aligned 64 KiB blocks with random data."""
    size = image.stat().st_size
    blocks = size // 65536
    count = max(1, blocks // 100)
    rng = random.Random(seed)
    chosen = rng.sample(range(blocks), count)
    with open(image, "r+b") as f:
        for block in chosen:
            f.seek(block * 65536)
            f.write(rng.randbytes(65536))
    return count * 65536


def warm(*paths):
    for path in paths:
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    arguments = parser.parse_args()
    for tool in ["cp", "zstd", "b3sum", "rsync", "mke2fs"]:
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is missing: apt-get install zstd b3sum rsync e2fsprogs")
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "standby-cli"], cwd=ROOT, check=True)

    work = Path(arguments.work)
    work.mkdir(parents=True, exist_ok=True)
    image = work / "disk.img"
    shutil.copyfile(build_image(work, arguments.size_gib), image)
    size = image.stat().st_size
    original = work / "original.img"
    shutil.copyfile(image, original)
    vault = work / "vault"
    copy = work / "copy.img"
    restored = work / "restored.img"
    compressed = work / "disk.img.zst"
    repeat = arguments.repeat
    warm(image)

    def fresh_vault():
        shutil.rmtree(vault, ignore_errors=True)
        subprocess.run([STANDBY, "vault", "init", vault], check=True, capture_output=True)

    def drop(*paths):
        return lambda: [p.unlink() for p in paths if p.exists()]

    results = {}
    results["cp"], _, _ = median_of(repeat, drop(copy), ["cp", image, copy])
    # restore fsyncs its output before it reports success; so does this peer.
    results["cp_durable"], _, _ = median_of(repeat, drop(copy), ["sh", "-c", f"cp '{image}' '{copy}' && sync '{copy}'"])
    results["zstd"], _, _ = median_of(repeat, drop(compressed), ["zstd", "-q", "-1", "-T2", "-f", image, "-o", compressed])
    zstd_bytes = compressed.stat().st_size
    results["sync_first"], peak_sync_first, out = median_of(
        repeat, fresh_vault, [STANDBY, "sync", image, "--vault", vault, "--disk", "disk", "--json"])
    vault_bytes = du_bytes(vault)
    vault_first = work / "vault-after-first-sync"
    shutil.rmtree(vault_first, ignore_errors=True)
    shutil.copytree(vault, vault_first)

    changed = rewrite_one_percent(image)
    warm(image)
    results["b3sum"], _, _ = median_of(repeat, None, ["b3sum", "--num-threads", "2", image])

    def reset_to_one_point():
        # Each repetition syncs the change onto the vault as the first sync left it.
        shutil.rmtree(vault)
        shutil.copytree(vault_first, vault)

    results["sync_incremental"], peak_sync_incremental, out = median_of(
        repeat, reset_to_one_point, [STANDBY, "sync", image, "--vault", vault, "--disk", "disk", "--json"])
    incremental_new = json.loads(out)["bytes_new"]

    old_for_standby, old_for_rsync = work / "old-standby.img", work / "old-rsync.img"
    results["resync"], peak_resync, out = median_of(
        repeat, lambda: shutil.copyfile(original, old_for_standby),
        [STANDBY, "resync", image, old_for_standby, "--json"])
    resync_written = json.loads(out)["bytes_written"]
    results["rsync"], _, out = median_of(
        repeat, lambda: shutil.copyfile(original, old_for_rsync),
        ["rsync", "--inplace", "--no-whole-file", "--stats", image, old_for_rsync])
    rsync_literal = next((int(line.split(":")[1].split()[0].replace(",", "")) for line in out.decode().splitlines()
                          if line.startswith("Literal data")), -1)
    if subprocess.run(["cmp", "-s", image, old_for_standby]).returncode != 0:
        sys.exit("resync did not make the copy equal to the source")

    results["restore"], peak_restore, _ = median_of(
        repeat, drop(restored), [STANDBY, "restore", "--vault", vault, "--disk", "disk", "--point", "latest", restored])
    if subprocess.run(["cmp", "-s", image, restored]).returncode != 0:
        sys.exit("restore did not reproduce the image")
    results["verify"], peak_verify, _ = median_of(1, None, [STANDBY, "verify", "--vault", vault])

    gib = size / (1 << 30)
    print(f"\nimage: {gib:.2f} GiB ext4; change: {changed / (1 << 20):.1f} MiB in 64 KiB blocks; "
          f"median of {repeat} runs; {os.cpu_count()} cores\n")
    rows = [
        ("first sync", results["sync_first"], "zstd -1 -T2", results["zstd"], "<= 1.0x time",
         results["sync_first"] <= results["zstd"]),
        ("first sync", results["sync_first"], "cp", results["cp"], "(reference)", None),
        ("incremental sync", results["sync_incremental"], "b3sum", results["b3sum"], "<= 2.0x time",
         results["sync_incremental"] <= 2 * results["b3sum"]),
        ("resync", results["resync"], "rsync --inplace", results["rsync"], ">= 3x faster",
         results["rsync"] >= 3 * results["resync"]),
        ("restore latest", results["restore"], "cp", results["cp"], "<= 2.0x time",
         results["restore"] <= 2 * results["cp"]),
        ("restore latest", results["restore"], "cp && sync", results["cp_durable"], "(both durable)", None),
    ]
    print(f"{'standby':<18}{'seconds':>9}   {'peer':<16}{'seconds':>9}  {'ratio':>7}  {'target':<14} met")
    for name, ours, peer, theirs, target, met in rows:
        mark = "" if met is None else ("yes" if met else "NO")
        print(f"{name:<18}{ours:>9.2f}   {peer:<16}{theirs:>9.2f}  {ours / theirs:>6.2f}x  {target:<14} {mark}")
    print()
    stored = [
        ("first sync: vault bytes", vault_bytes, f"zstd -1 file {zstd_bytes / (1 << 20):.0f} MiB",
         vault_bytes <= zstd_bytes, vault_bytes / zstd_bytes),
        ("incremental: new bytes", incremental_new, "<= 2% of image", incremental_new <= 0.02 * size, incremental_new / size),
        ("resync: bytes written", resync_written, "<= 2% of image", resync_written <= 0.02 * size, resync_written / size),
    ]
    for name, value, target, met, ratio in stored:
        print(f"{name:<26}{value / (1 << 20):>9.1f} MiB  ({ratio:.4f})  target {target:<24} {'yes' if met else 'NO'}")
    print(f"{'rsync literal data':<26}{rsync_literal / (1 << 20):>9.1f} MiB")
    print()
    for name, peak in [("sync (first)", peak_sync_first), ("sync (incremental)", peak_sync_incremental),
                       ("resync", peak_resync), ("restore", peak_restore), ("verify", peak_verify)]:
        print(f"peak memory {name:<20}{peak / (1 << 20):>8.0f} MiB")
    if not arguments.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
