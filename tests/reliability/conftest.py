from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tests.reliability.support import Server


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(
        buf,
        train_images=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        train_labels=(np.arange(8) % 2).reshape(-1, 1).astype(np.uint8),
    )
    return buf.getvalue()


PAYLOAD = _npz_bytes()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/ok.npz"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path.startswith("/cut.npz"):  # announce the whole file, send a third, drop the connection
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def http_server() -> Iterator[Server]:
    """A local HTTP server on 127.0.0.1 (nothing leaves the machine)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", PAYLOAD)
    httpd.shutdown()
    httpd.server_close()
