"""Writes that depend on each other across three disks (libnbd).

Usage: chained_writes.py URI_A URI_B URI_C DISK_BYTES SEED SECONDS

Record n (512 bytes: b"REC!", the seed and n, repeated) goes to slot n of
the lower half of disk A; once A acknowledged it, to slot n of B; once B
did, to slot n of C; then record n + 1. So at any moment consistent
across the three disks, C's last record <= B's <= A's, and each disk
holds every record up to its last. Meanwhile another thread per disk
writes noise (4 KiB to 64 KiB, pipelined) into the disk's upper half, so
that writes are always in flight when a point is made. Runs for SECONDS
(or until the lower half is full), then prints `records N` and exits.
"""

import random
import struct
import sys
import threading
import time

import nbd

RECORD = 512

uris = sys.argv[1:4]
disk_bytes, seed, seconds = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
half = disk_bytes // 2
stop = threading.Event()
failures = []


def record(n):
    return (b"REC!" + struct.pack("<QQ", seed, n) + bytes(12)) * (RECORD // 32)


def noise(uri, salt):
    try:
        rng = random.Random(seed * 7 + salt)
        handle = nbd.NBD()
        handle.connect_uri(uri)
        in_flight = []
        while not stop.is_set():
            length = rng.choice([4096, 16384, 65536])
            offset = half + rng.randrange(0, (half - length) // 4096) * 4096
            in_flight.append(handle.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(rng.randbytes(length))), offset))
            while len(in_flight) >= 8:
                handle.poll(-1)
                in_flight = [c for c in in_flight if not handle.aio_command_completed(c)]
        while in_flight:
            handle.poll(-1)
            in_flight = [c for c in in_flight if not handle.aio_command_completed(c)]
        handle.shutdown()
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        failures.append(f"noise on {uri}: {e}")


threads = [threading.Thread(target=noise, args=(uri, i)) for i, uri in enumerate(uris)]
for thread in threads:
    thread.start()
handles = []
for uri in uris:
    handle = nbd.NBD()
    handle.connect_uri(uri)
    handles.append(handle)
slots = half // RECORD
rng = random.Random(seed)
until = time.monotonic() + seconds
n = 0
try:
    while time.monotonic() < until and n + 1 < slots:
        n += 1
        data = record(n)
        for handle in handles:
            handle.pwrite(data, n * RECORD)
        if rng.random() < 0.01:
            time.sleep(rng.random() / 50)
finally:
    stop.set()
    for thread in threads:
        thread.join()
for handle in handles:
    handle.shutdown()
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"records {n}", flush=True)
