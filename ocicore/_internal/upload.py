"""Blob uploads: a session per attempt, streamed or chunked, hashed while sent.

A failed session is never replayed request by request: the next attempt checks whether
the blob arrived (a lost response to a successful PUT), and otherwise opens a fresh
session (``POST``). What is sent is hashed on the way; a source that does not hash to
the digest it is uploaded as fails the upload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from ocicore._internal.http import RegistryHTTP
from ocicore.digest import Digest
from ocicore.errors import IntegrityError, RegistryError, TransportError
from ocicore.progress import Progress


class BlobUploader:
    """Uploads for one registry host, with its retry policy, counters and progress."""

    def __init__(self, http: RegistryHTTP, progress: Callable[[], Progress],
                 blob_exists: Callable[[str, Digest], bool]) -> None:
        self._http = http
        self.config = http.config
        self.stats = http.stats
        self._progress = progress
        self.blob_exists = blob_exists

    @property
    def progress(self) -> Progress:
        """The client's current progress receiver."""
        return self._progress()

    def upload(self, repository: str, source: bytes | Path, digest: Digest, size: int,
               location: str | None) -> None:
        """Upload ``source`` as ``digest``, into the session at ``location`` if one is
        open already (a declined mount opens one). Raises the last ``TransportError``
        when every attempt failed, ``IntegrityError`` when the source does not match."""
        key = str(digest)
        what = f"upload of blob {digest} to {repository}"
        attempts = self.config.retry.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                if location is None:
                    response = self._http.send(
                        "POST", f"/v2/{repository}/blobs/uploads/", what=what, ok=(202,),
                        idempotent=False,
                    )
                    location = upload_location(response, what)
                if self.config.chunked_upload:
                    self._upload_chunks(location, source, digest, size, what)
                else:
                    url = httpx.URL(self._http.url(location)).copy_merge_params(
                        {"digest": str(digest)})
                    self._http.send(
                        "PUT", str(url), what=what, ok=(201,), idempotent=False,
                        headers={"Content-Type": "application/octet-stream",
                                 "Content-Length": str(size)},
                        content=lambda: self._body(source, digest, key),
                    )
                self.stats.add(bytes_uploaded=size, blobs_uploaded=1)
                self.progress.finish(key, "done")
                return
            except (TransportError, httpx.StreamError) as exc:
                location = None
                if attempt == attempts:
                    self.progress.finish(key, "failed")
                    raise
                if self.blob_exists(repository, digest):
                    self.stats.add(bytes_uploaded=size, blobs_uploaded=1)
                    self.progress.finish(key, "done")
                    return
                self._http.backoff(attempt, what,
                                   f"{type(exc).__name__}; restarting the upload session")
            except BaseException:
                self.progress.finish(key, "failed")
                raise

    def _upload_chunks(self, location: str, source: bytes | Path, digest: Digest, size: int,
                       what: str) -> None:
        offset = 0
        chunk_size = self.config.chunk_size
        for chunk in chunks(source, chunk_size):
            end = offset + len(chunk) - 1
            response = self._http.send(
                "PATCH", location, what=what, ok=(202,), idempotent=False,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))},
                content=chunk,
            )
            location = upload_location(response, what)
            offset = end + 1
            self.progress.advance(str(digest), len(chunk))
        if offset != size:
            raise IntegrityError(f"{what}: the source changed size during the upload")
        url = httpx.URL(self._http.url(location)).copy_merge_params({"digest": str(digest)})
        self._http.send("PUT", str(url), what=what, ok=(201,), idempotent=False,
                        headers={"Content-Length": "0"}, content=b"")

    def _body(self, source: bytes | Path, digest: Digest, key: str) -> Iterator[bytes]:
        hasher = digest.hasher()
        for chunk in chunks(source, self.config.chunk_size):
            hasher.update(chunk)
            self.progress.advance(key, len(chunk))
            yield chunk
        if hasher.hexdigest() != digest.hex:
            raise IntegrityError(
                f"the content uploaded as {digest} hashes to {digest.algorithm}:"
                f"{hasher.hexdigest()}",
                hint="the source changed during the upload, or the digest given is wrong")


def chunks(source: bytes | Path, size: int) -> Iterator[bytes]:
    """``source`` in pieces of ``size`` bytes (a file is read lazily)."""
    if isinstance(source, bytes):
        for start in range(0, len(source), size):
            yield source[start : start + size]
        return
    with source.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def digest_of(source: bytes | Path, algorithm: str) -> Digest:
    """The digest of ``source``, read in pieces."""
    hasher = hashlib.new(algorithm)
    for chunk in chunks(source, 4 * 1024 * 1024):
        hasher.update(chunk)
    return Digest(algorithm, hasher.hexdigest())


def upload_location(response: httpx.Response, what: str) -> str:
    """The session URL the registry answered with; raises when it sent none."""
    location: str | None = response.headers.get("Location")
    if not location:
        raise RegistryError(f"{what}: the registry started an upload without a Location header",
                            hint="the registry is not distribution-spec compliant")
    return location
