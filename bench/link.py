"""A wide-area link on loopback, for benchmarks: a TCP relay that delays every byte by `delay_ms` in each direction
and caps each connection at `rate_mb_s` (MB/s, each direction), as one HTTPS connection to S3 from a lab does.

The relay does both itself (asyncio, one process): this kernel has no netem qdisc, and a per-connection cap is
what a real S3 connection shows (tc's tbf would cap the whole interface instead). A new connection waits
`handshake_rtts` round trips before its first byte goes through (TCP + TLS 1.3 set-up: 2). Bytes in flight per
direction are bounded (bandwidth x delay + 1 MB, like a TCP window), so a fast server cannot fill the relay's memory.

It counts connections, requests (HTTP request lines from the client) and bytes in each direction; a connection to
the control port gets them as one JSON line. Run it through `Link` (starts the relay as a child process, stops
it on exit, nothing left running):

    with Link(target_port, delay_ms=20, rate_mb_s=50) as link:
        ... endpoint_url=link.url ...
        link.counters()  # {"connections": .., "requests": .., "bytes_to_client": .., "bytes_to_server": ..}

Command line (what `Link` runs): python bench/link.py --target-port PORT [--delay-ms 20] [--rate-mb-s 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

READ_BYTES = 256 * 1024
REQUEST_LINE_END = b" HTTP/1.1\r\n"


class Counters:
    def __init__(self):
        self.values = {"connections": 0, "requests": 0, "bytes_to_client": 0, "bytes_to_server": 0}
        self.tail = {}  # per connection: last bytes of the request stream (a request line split across reads)


async def _pump(reader, writer, delay_s: float, rate: float, window: int, count, tail_key=None, counters=None):
    """Forward bytes, each delivered delay_s after it arrived and no faster than rate bytes/s."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=max(4, window // READ_BYTES))
    tail = b""

    async def receive():
        nonlocal tail
        while data := await reader.read(READ_BYTES):
            if tail_key is not None:
                seen = tail + data
                counters.values["requests"] += seen.count(REQUEST_LINE_END)
                tail = seen[-(len(REQUEST_LINE_END) - 1) :]
            await queue.put((time.monotonic() + delay_s, data))
        await queue.put((time.monotonic() + delay_s, b""))

    async def send():
        free_at = 0.0  # when the link has finished putting out the bytes already sent
        while True:
            due, data = await queue.get()
            now = time.monotonic()
            start = max(due, free_at)
            if start > now:
                await asyncio.sleep(start - now)
            if not data:
                break
            free_at = max(start, free_at) + len(data) / rate
            writer.write(data)
            count(len(data))
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    receiver = asyncio.ensure_future(receive())
    try:
        await send()
    finally:
        receiver.cancel()


async def _serve(args) -> None:
    counters = Counters()
    delay_s, rate = args.delay_ms / 1000, args.rate_mb_s * 1e6
    window = int(rate * delay_s) + 1024 * 1024

    async def relay(client_reader, client_writer):
        counters.values["connections"] += 1
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", args.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.sleep(args.handshake_rtts * 2 * delay_s)

        def to_client(n):
            counters.values["bytes_to_client"] += n

        def to_server(n):
            counters.values["bytes_to_server"] += n

        upstream = _pump(client_reader, server_writer, delay_s, rate, window, to_server, True, counters)
        downstream = _pump(server_reader, client_writer, delay_s, rate, window, to_client)
        try:
            await asyncio.gather(upstream, downstream)
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, server_writer):
                writer.close()

    async def control(reader, writer):
        writer.write(json.dumps(counters.values).encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(relay, "127.0.0.1", 0, backlog=128)
    control_server = await asyncio.start_server(control, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    control_port = control_server.sockets[0].getsockname()[1]
    print(f"{port} {control_port}", flush=True)
    async with server, control_server:
        await asyncio.gather(server.serve_forever(), control_server.serve_forever())


class ChildServer:
    """A server script run as a child process that prints its port(s) on its first line; stopped on exit."""

    def __init__(self, *arguments: str):
        self.command = [sys.executable, *arguments]

    def __enter__(self):
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().split()
        if not line:
            self.__exit__()
            raise RuntimeError(f"{' '.join(self.command)} did not start")
        self.ports = [int(port) for port in line]
        self.port = self.ports[0]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


class Link(ChildServer):
    """The relay in front of 127.0.0.1:target_port."""

    def __init__(self, target_port: int, delay_ms: float = 20.0, rate_mb_s: float = 50.0, handshake_rtts: int = 2):
        super().__init__(str(Path(__file__).resolve()), "--target-port", str(target_port), "--delay-ms",
                         str(delay_ms), "--rate-mb-s", str(rate_mb_s), "--handshake-rtts", str(handshake_rtts))

    def counters(self) -> dict:
        with socket.create_connection(("127.0.0.1", self.ports[1])) as connection:
            return json.loads(connection.makefile().readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay (default 20)")
    parser.add_argument("--rate-mb-s", type=float, default=50.0, help="cap per connection and direction (default 50)")
    parser.add_argument("--handshake-rtts", type=int, default=2, help="round trips to set up a connection (default 2)")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
