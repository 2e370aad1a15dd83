"""A real HTTP receiver on 127.0.0.1 for alert tests: a `http.server` thread that keeps every
POST (its JSON body) and answers with `status`, after `delay_s` (a receiver that hangs)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(self, status: int = 200, delay_s: float = 0.0):
        self.status, self.delay_s = status, delay_s
        self.posts: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                with receiver._lock:
                    receiver.posts.append({"path": self.path, "json": body})
                time.sleep(receiver.delay_s)
                try:
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client gave up (the hanging receiver's point)
                    pass

            def log_message(self, *args):  # quiet test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/recloop"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self, event: str) -> list[dict]:
        """The JSON bodies received for one alert event."""
        with self._lock:
            return [p["json"] for p in self.posts if p["json"].get("event") == event]

    def wait_for(self, event: str, match=lambda body: True, timeout: float = 60) -> dict:
        """The first alert of `event` that `match`es, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        while True:
            found = [b for b in self.events(event) if match(b)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no '{event}' alert after {timeout} s; received {self.posts}")
            time.sleep(0.2)
