#!/usr/bin/env python3
"""A TCP proxy that delays every byte by a fixed time in each direction.

This kernel has no netem (`tc qdisc ... netem` is unknown), so the 50 ms
round trip of issue 15's benchmarks is made in user space: bench/hosts.py
runs this proxy in the primary host's namespace and sends the connections
to the recovery host through it (an nftables DNAT rule; the proxy's own
connections carry a firewall mark the rule skips). Each direction holds at
most WINDOW bytes unacknowledged, as a TCP connection with Linux's
default largest receive window (net.ipv4.tcp_rmem, 6 MiB) would: room
comes back a whole round trip after the bytes were sent (when their
acknowledgement would arrive), so a 50 ms round trip caps one connection
at WINDOW / 50 ms, as on a real link.

Usage: delay_proxy.py --listen HOST:PORT --to HOST:PORT --delay-ms N [--mark N]
"""
import argparse
import asyncio
import socket

WINDOW = 6 << 20
READ = 256 << 10


async def pump(reader, writer, delay):
    """Copies `reader` to `writer`, each chunk `delay` seconds late, at most
    WINDOW bytes held at once; closes the write side after the end."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()
    room = asyncio.Condition()
    held = 0

    async def deliver():
        nonlocal held
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            # The room comes back when the receiver's acknowledgement has
            # travelled back: a full round trip after the bytes left.
            loop.call_later(delay, lambda size=len(data): asyncio.ensure_future(release(size)))

    async def release(size):
        nonlocal held
        async with room:
            held -= size
            room.notify_all()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            async with room:
                await room.wait_for(lambda: held < WINDOW)
            data = await reader.read(READ)
            held += len(data)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await delivering
    except (ConnectionError, OSError):
        delivering.cancel()


async def serve(listen, target, delay, mark):
    host, port = target

    async def connected(client_reader, client_writer):
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if mark:
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        upstream.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(upstream, (host, port))
        except OSError:
            upstream.close()
            client_writer.close()
            return
        server_reader, server_writer = await asyncio.open_connection(sock=upstream)
        await asyncio.gather(pump(client_reader, server_writer, delay), pump(server_reader, client_writer, delay),
                             return_exceptions=True)
        for writer in (client_writer, server_writer):
            writer.close()

    server = await asyncio.start_server(connected, listen[0], listen[1])
    async with server:
        await server.serve_forever()


def address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=address, required=True)
    parser.add_argument("--to", type=address, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--mark", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.to, args.delay_ms / 1000, args.mark))


if __name__ == "__main__":
    main()
