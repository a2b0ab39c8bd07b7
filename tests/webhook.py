"""A local HTTP server standing in for Slack's incoming webhook: it records each POSTed JSON payload."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Webhook:
    """Records payloads; answers with `status` (200 "ok" as Slack does, or an error)."""

    def __init__(self) -> None:
        self.payloads: list[dict] = []
        self.status = 200
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook.payloads.append(json.loads(body))
                self.send_response(webhook.status)
                self.end_headers()
                self.wfile.write(b"ok" if webhook.status == 200 else b"invalid_token")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/secret-token"


@contextlib.contextmanager
def serving_webhook() -> Iterator[Webhook]:
    """A Webhook serving on 127.0.0.1 for the duration of the block."""
    hook = Webhook()
    threading.Thread(target=hook.server.serve_forever, daemon=True).start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()
