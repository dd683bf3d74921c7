"""A read-only S3 endpoint over a directory, for benchmarks: GET (one byte range) and HEAD of
`/<bucket>/<key>[?versionId=...]`, served from `<root>/<bucket>/<key>` with sendfile.

Why not moto here: moto's GetObject reads the whole object into memory for every request and then slices the range
(moto/s3/models.py FakeKey.value), so each ranged read of a 1 GB file costs a 1 GB copy in the server; the
benchmark would measure moto, not the link. Tests use moto (small files); this serves the benchmark's large ones.
Each file has one version, whose id and ETag derive from its size and modification time; a request pinned to
another version gets 404 NoSuchVersion, as S3 answers. Anonymous reads only, as the public bucket allows.

    with ObjectServer(root) as server:   # a child process, stopped on exit
        server.port
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import re
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from link import ChildServer

RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def version_of(path: Path) -> tuple[str, str]:
    """(version id, ETag) of a file: stable while the file is unchanged."""
    stat = path.stat()
    digest = hashlib.blake2b(f"{stat.st_size}:{stat.st_mtime_ns}".encode(), digest_size=16).hexdigest()
    return digest, f'"{digest}"'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections as with S3
    root: Path

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle + delayed ACKs add 40 ms to small reads.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def _error(self, status: int, code: str) -> None:
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def _resolve(self):
        parts = urlsplit(self.path)
        path = (self.root / unquote(parts.path).lstrip("/")).resolve()
        if self.root not in path.parents or not path.is_file():
            self._error(404, "NoSuchKey")
            return None
        version_id, etag = version_of(path)
        asked = parse_qs(parts.query).get("versionId", [version_id])[0]
        if asked != version_id:
            self._error(404, "NoSuchVersion")
            return None
        return path, version_id, etag

    def _headers(self, status, path, version_id, etag, length, content_range=None):
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "binary/octet-stream")
        self.send_header("ETag", etag)
        self.send_header("x-amz-version-id", version_id)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True))
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()

    def do_HEAD(self):
        found = self._resolve()
        if found:
            path, version_id, etag = found
            self._headers(200, path, version_id, etag, path.stat().st_size)

    def do_GET(self):
        found = self._resolve()
        if not found:
            return
        path, version_id, etag = found
        size = path.stat().st_size
        start, end, status, content_range = 0, size - 1, 200, None
        wanted = self.headers.get("Range")
        if wanted:
            match = RANGE.match(wanted.strip())
            if not match or int(match.group(1)) >= size:
                self._error(416, "InvalidRange")
                return
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            status, content_range = 206, f"bytes {start}-{end}/{size}"
        if_match = self.headers.get("If-Match")
        if if_match and if_match != etag:
            self._error(412, "PreconditionFailed")
            return
        self._headers(status, path, version_id, etag, end - start + 1, content_range)
        self.wfile.flush()
        with open(path, "rb") as handle:
            self.connection.sendfile(handle, start, end - start + 1)


def serve(root: Path) -> None:
    Handler.root = root.resolve()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


class ObjectServer(ChildServer):
    """serve(root) as a child process on a free loopback port."""

    def __init__(self, root: Path):
        super().__init__(str(Path(__file__).resolve()), str(root))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="directory holding <bucket>/<key>")
    serve(parser.parse_args().root)
