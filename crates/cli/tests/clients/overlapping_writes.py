"""Pipelined, overlapping writes into an NBD export (libnbd), in bursts.

Usage: overlapping_writes.py URI DISK_BYTES BURSTS SEED

Each burst issues 256 writes, zeroes and trims at queue depth 32 into a
small hot area, so that many are in flight over the same bytes at once;
when all are answered it flushes, reads the whole disk back and prints
`burst N sha256 HEX`, then waits for a line on stdin (the caller records a
point) before the next burst. Whatever order the server applied
overlapping writes in, the disk it reads back is what a point recorded
now must restore.
"""

import hashlib
import random
import sys

import nbd

uri, disk_bytes, bursts, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
handle = nbd.NBD()
handle.connect_uri(uri)
hot = min(disk_bytes, 1 << 20)
failed = []


def completed(error):
    if error.value:
        failed.append(error.value)
    return 1


for burst in range(bursts):
    buffers = []
    for request in range(256):
        while handle.aio_in_flight() >= 32:
            handle.poll(1)
        length = rng.choice([512, 4096, 65536, 3 * 4096 + 512])
        offset = rng.randrange(0, hot - length, 512)
        kind = rng.random()
        if kind < 0.8:
            payload = nbd.Buffer.from_bytearray(bytearray(rng.randbytes(length)))
            buffers.append(payload)
            handle.aio_pwrite(payload, offset, completion=completed)
        elif kind < 0.9:
            handle.aio_zero(length, offset, completion=completed)
        else:
            handle.aio_trim(length, offset, completion=completed)
    while handle.aio_in_flight() > 0:
        handle.poll(1)
    if failed:
        sys.exit(f"{len(failed)} requests failed (errno {failed[0]})")
    handle.flush()
    digest = hashlib.sha256(handle.pread(disk_bytes, 0)).hexdigest()
    print(f"burst {burst} sha256 {digest}", flush=True)
    sys.stdin.readline()
handle.shutdown()
