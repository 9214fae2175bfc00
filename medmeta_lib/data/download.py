"""Checksummed, atomic file download: never leaves a half-written file behind.

The file is streamed into a temporary file in the destination folder, its MD5 / SHA-256 is
checked, and only then is it moved into place with ``os.replace`` (atomic on POSIX and Windows
when both paths are on one file system). An interrupted transfer, an HTTP error or a checksum
mismatch removes the temporary file and leaves any previous ``dest`` untouched.

Uses the standard library (``urllib``) rather than ``requests``: one GET with a timeout needs
nothing more, and it keeps the dependency set small.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["DownloadError", "download_file", "file_checksum"]

_CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]+$")


class DownloadError(OSError):
    """A download failed (network, HTTP status, truncated transfer or checksum mismatch).

    Nothing is left at the destination: the temporary file has been removed and any previous
    file at ``dest`` is unchanged.
    """


def _check_digest(value: str | None, field: str, length: int) -> str | None:
    if value is None:
        return None
    v = str(value).strip().lower()
    if len(v) != length or not _HEX.match(v):
        raise ValueError(f"{field} must be {length} hexadecimal digits, got {value!r}; copy it from the data provider")
    return v


def file_checksum(path: str | os.PathLike[str], algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks.

    Args:
        path: the file.
        algorithm: a ``hashlib`` name, e.g. ``"md5"`` or ``"sha256"``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"; _ = p.write_bytes(b"abc")
        >>> file_checksum(p)
        '900150983cd24fb0d6963f7d28e17f72'
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its checksum before it appears there.

    Args:
        url: ``http://``, ``https://`` or ``file://`` address.
        dest: destination file; its folder is created if needed. An existing file is replaced
            only after the new one has been fully received and verified.
        md5: expected MD5 (32 hex digits); checked when given.
        sha256: expected SHA-256 (64 hex digits); checked when given.
        timeout: seconds to wait for the connection and for each read; must be > 0.
        progress: show a ``tqdm`` progress bar (on stderr).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: for a bad argument (URL scheme, checksum format, timeout).
        DownloadError: for an HTTP error, a network error or timeout, a transfer that ended
            early, or a checksum mismatch. The message names the URL, the file and what to do;
            no partial file is left behind.

    Example:
        >>> download_file("https://example.org/data.npz", "data/cache/data.npz",
        ...               md5="0123456789abcdef0123456789abcdef")  # doctest: +SKIP
        PosixPath('data/cache/data.npz')
    """
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://", "file://")):
        raise ValueError(f"url must start with http://, https:// or file://, got {url!r}")
    md5 = _check_digest(md5, "md5", 32)
    sha256 = _check_digest(sha256, "sha256", 64)
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    dest = Path(dest).expanduser()
    if dest.is_dir():
        raise ValueError(f"dest {dest} is a folder; give the full file path to write")
    dest.parent.mkdir(parents=True, exist_ok=True)

    retry = "check the network connection and run the download again"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h_md5, h_sha = hashlib.md5(), hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out:
            try:
                req = urllib.request.Request(url, headers={"User-Agent": "medmeta-workbench"})
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    length_header = resp.headers.get("Content-Length")
                    expected = int(length_header) if length_header and length_header.isdigit() else None
                    with tqdm(
                        total=expected,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=dest.name,
                        disable=not progress,
                        leave=False,
                    ) as bar:
                        while True:
                            chunk = resp.read(_CHUNK)
                            if not chunk:
                                break
                            out.write(chunk)
                            h_md5.update(chunk)
                            h_sha.update(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
            except urllib.error.HTTPError as e:
                raise DownloadError(
                    f"download of {url} failed with HTTP {e.code} {e.reason}; nothing was written to {dest}. "
                    "Check the URL (the file may have moved) or try again later"
                ) from e
            except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError) as e:
                why = getattr(e, "reason", None) or e
                raise DownloadError(
                    f"download of {url} failed after {received} bytes ({type(e).__name__}: {why}); "
                    f"nothing was written to {dest}. {retry.capitalize()}"
                ) from e
            if expected is not None and received != expected:
                raise DownloadError(
                    f"download of {url} ended after {received} of {expected} bytes; nothing was written to "
                    f"{dest}. {retry.capitalize()}"
                )
            out.flush()
            os.fsync(out.fileno())
        for algo, want, got in (("MD5", md5, h_md5.hexdigest()), ("SHA-256", sha256, h_sha.hexdigest())):
            if want is not None and got != want:
                raise DownloadError(
                    f"checksum mismatch for {url}: {algo} {got}, expected {want}; the file was discarded and "
                    f"nothing was written to {dest}. The server may have sent an error page or a changed file: "
                    "check the URL and the expected checksum, then try again"
                )
        # mkstemp creates the file 0600; give it the permissions a normal new file would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return dest
