"""A real HTTP server on 127.0.0.1 for download tests (no network needed).

Import it from any test (``tests/`` is on ``sys.path`` under pytest):

    >>> from httpserver import LocalHTTPServer, Reply, closed_port
    >>> with LocalHTTPServer({"/a.zip": Reply(body=b"PK...")}) as server:
    ...     download_file(server.url("/a.zip"), tmp_path / "a.zip")
    ...     server.hits["/a.zip"]
    1

Each route maps a path to a :class:`Reply`, or to a list of replies served in
turn (the last one repeats), e.g. ``[Reply(status=500), Reply(body=data)]``
for "fails once, then works". Unknown paths answer 404.
"""
from __future__ import annotations

import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Reply:
    """One canned response.

    Args:
        body: bytes to send.
        status: HTTP status code.
        content_length: the Content-Length header to announce; ``None`` means
            ``len(body)``. A larger value simulates a truncated transfer (the
            server closes the connection after ``body``).
        headers: extra headers.
        drop: close the connection without any response (a reset).
        handler: full control; called with the request handler instead of
            everything above.
    """

    body: bytes = b""
    status: int = 200
    content_length: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    handler: Callable[[BaseHTTPRequestHandler], None] | None = None


class LocalHTTPServer:
    """A threaded HTTP/1.0 server on an ephemeral port; counts requests per path in ``hits``."""

    def __init__(self, routes: dict[str, Reply | list[Reply]] | None = None):
        self.routes: dict[str, Reply | list[Reply]] = dict(routes or {})
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "LocalHTTPServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self, path: str) -> Reply | None:
        with self._lock:
            n = self.hits[path]
            self.hits[path] += 1
            route = self.routes.get(path)
        if isinstance(route, list):
            return route[min(n, len(route) - 1)]
        return route

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                reply = server._next_reply(self.path)
                if reply is None:
                    self.send_error(404)
                elif reply.handler is not None:
                    reply.handler(self)
                elif reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.send_response(reply.status)
                    length = len(reply.body) if reply.content_length is None else reply.content_length
                    self.send_header("Content-Length", str(length))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(reply.body)
                    self.close_connection = True

            def log_message(self, format: str, *args) -> None:  # keep pytest output clean
                pass

        return Handler


def closed_port() -> int:
    """A local port with nothing listening on it (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
