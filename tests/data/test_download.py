"""download_file against a local HTTP server on 127.0.0.1 (nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medmeta_lib.data.download import DownloadError, download_file, file_checksum

PAYLOAD = bytes(range(256)) * 400  # 100 KiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/file.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/cut.bin":
            # announce the whole file, send half of it, then drop the connection
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/nolength.bin":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_ok_md5_and_sha256(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "file.bin"
    out = download_file(f"{server}/file.bin", dest, md5=MD5, sha256=SHA256, progress=False)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["file.bin"]  # no temp file left
    assert file_checksum(dest) == MD5
    assert file_checksum(dest, "sha256") == SHA256


def test_download_without_content_length(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "x.bin"
    download_file(f"{server}/nolength.bin", dest, md5=MD5.upper(), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_md5_mismatch_leaves_nothing_and_keeps_old_file(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"previous version")
    wrong = "0" * 32
    with pytest.raises(DownloadError) as ei:
        download_file(f"{server}/file.bin", dest, md5=wrong, progress=False)
    msg = str(ei.value)
    assert "checksum mismatch" in msg and f"{server}/file.bin" in msg and str(dest) in msg and wrong in msg
    assert MD5 in msg  # the MD5 actually received is reported
    assert dest.read_bytes() == b"previous version"  # atomic: the old file is untouched
    assert _leftovers(tmp_path) == ["file.bin"]


def test_sha256_mismatch(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="SHA-256"):
        download_file(f"{server}/file.bin", tmp_path / "f.bin", sha256="ab" * 32, progress=False)
    assert _leftovers(tmp_path) == []


def test_connection_cut_mid_file(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "cut.bin"
    with pytest.raises(DownloadError) as ei:
        download_file(f"{server}/cut.bin", dest, md5=MD5, progress=False)
    msg = str(ei.value)
    assert f"{server}/cut.bin" in msg and str(dest) in msg and "again" in msg
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_http_404(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "missing.bin"
    with pytest.raises(DownloadError, match="HTTP 404") as ei:
        download_file(f"{server}/missing.bin", dest, progress=False)
    assert f"{server}/missing.bin" in str(ei.value)
    assert _leftovers(tmp_path) == []


def test_connection_refused(tmp_path: Path) -> None:
    # a port that was just free: nothing listens there
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}"):
        download_file(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", timeout=5, progress=False)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"url": "ftp://host/x"}, "url"),
        ({"md5": "xyz"}, "md5"),
        ({"sha256": "00"}, "sha256"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_arguments(tmp_path: Path, kw: dict, field: str) -> None:
    args = {"url": "http://127.0.0.1:1/x", "dest": tmp_path / "x"} | kw
    with pytest.raises(ValueError, match=field):
        download_file(args.pop("url"), args.pop("dest"), progress=False, **args)
    assert _leftovers(tmp_path) == []


def test_dest_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="folder"):
        download_file("http://127.0.0.1:1/x", tmp_path, progress=False)
