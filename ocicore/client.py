"""``RegistryClient``: read and write one OCI registry (distribution spec v1.1).

Everything downloaded is verified: manifests fetched by digest must hash to it,
blobs stream into a temporary file while hashing and are moved into place only
when digest and size match. Idempotent requests (GET, HEAD, PUT of
content-addressed data) are retried per ``ClientConfig.retry``; an upload session
that fails is restarted from a fresh session (after checking whether the blob
arrived), never replayed request by request.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ocicore._internal.http import RegistryHTTP, Stats, is_loopback
from ocicore._internal.upload import BlobUploader, digest_of
from ocicore.auth import RegistryAuth
from ocicore.config import ClientConfig
from ocicore.credentials import Credentials, lookup_credentials
from ocicore.digest import Digest
from ocicore.errors import (
    DigestMismatchError,
    IntegrityError,
    NotFoundError,
    RegistryError,
    SizeLimitError,
    TransportError,
)
from ocicore.models import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    Descriptor,
    Index,
    Manifest,
    ManifestFormatError,
    media_type_of,
    parse_manifest,
)
from ocicore.progress import NoProgress, Progress
from ocicore.reference import DOCKER_HUB, DOCKER_HUB_API_HOST, check_repository, check_tag

log = logging.getLogger(__name__)

USER_AGENT = "appliance-release/0.1"
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_AUTO: Any = object()


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest's raw bytes, verified against ``digest``, and its media type."""

    digest: Digest
    media_type: str
    data: bytes

    def parse(self) -> Manifest | Index:
        return parse_manifest(self.data, what=f"manifest {self.digest}")

    def descriptor(self) -> Descriptor:
        return Descriptor(media_type=self.media_type, digest=self.digest, size=len(self.data))


def make_http_client(
    *, ca_file: Path | None = None, config: ClientConfig | None = None
) -> httpx.Client:
    """An ``httpx.Client`` with our timeouts, pool size and TLS trust.

    TLS verification is always on; ``ca_file`` adds a CA bundle to trust.
    """
    config = config or ClientConfig()
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                f"cannot load the CA bundle {ca_file}: {exc}",
                hint="pass --ca-file with a PEM file of CA certificates",
            ) from None
    return httpx.Client(
        verify=verify,
        timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
        limits=httpx.Limits(max_connections=max(4, config.concurrency * 2)),
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
    )


class RegistryClient:
    """Read and write one registry host.

    ``registry`` is the host as it appears in references (``ghcr.io``,
    ``127.0.0.1:5000``). ``http`` is injected (one is made when omitted);
    ``credentials`` defaults to the documented lookup (``ocicore.credentials``),
    ``None`` forces anonymous. ``plain_http=None`` means HTTPS, except that a loopback
    registry which answers in plain HTTP is then spoken to in plain HTTP.
    """

    def __init__(
        self,
        registry: str,
        *,
        http: httpx.Client | None = None,
        credentials: Credentials | None = _AUTO,
        docker_config: Path | None = None,
        plain_http: bool | None = None,
        ca_file: Path | None = None,
        config: ClientConfig | None = None,
        progress: Progress | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry = registry
        self.config = config or ClientConfig()
        self.progress: Progress = progress or NoProgress()
        if credentials is _AUTO:
            credentials = lookup_credentials(registry, docker_config=docker_config)
        self.auth = RegistryAuth(credentials)
        self._owns_http = http is None
        self._http_client = http or make_http_client(ca_file=ca_file, config=self.config)
        api_host = DOCKER_HUB_API_HOST if registry == DOCKER_HUB else registry
        if plain_http is None and not is_loopback(api_host):
            plain_http = False
        self._http = RegistryHTTP(
            api_host, self._http_client, self.auth, self.config, plain_http=plain_http, sleep=sleep
        )
        self._uploader = BlobUploader(self._http, lambda: self.progress, self.blob_exists)

    @property
    def stats(self) -> Stats:
        return self._http.stats

    def close(self) -> None:
        if self._owns_http:
            self._http_client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------

    def ping(self) -> None:
        """Check that the host speaks the registry API (``GET /v2/``; 401 counts as alive)."""
        self._http.send("GET", "/v2/", what=f"registry {self.registry}", ok=(200, 401))

    def resolve(self, repository: str, reference: str | Digest) -> Descriptor:
        """The descriptor (digest, media type, size) of a tag or digest, from one HEAD.

        Falls back to a GET when the registry sends no ``Docker-Content-Digest``.
        Raises ``NotFoundError`` when the tag or digest is unknown.
        """
        check_repository(repository)
        ref = _reference_text(reference)
        what = f"manifest {repository}:{ref}" if isinstance(reference, str) else (
            f"manifest {repository}@{ref}"
        )
        response = self._http.send(
            "HEAD", f"/v2/{repository}/manifests/{ref}", what=what,
            headers={"Accept": ", ".join(MANIFEST_ACCEPT)},
        )
        header = response.headers.get("Docker-Content-Digest")
        media = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        size = response.headers.get("Content-Length")
        if header and media and size and size.isdigit():
            digest = Digest.parse(header)
            if isinstance(reference, Digest) and digest != reference:
                raise DigestMismatchError(what, str(reference), str(digest))
            return Descriptor(media_type=media, digest=digest, size=int(size))
        return self.get_manifest(repository, reference).descriptor()

    def get_manifest(self, repository: str, reference: str | Digest) -> FetchedManifest:
        """Fetch a manifest or index; by digest, its bytes must hash to it.

        By tag, the ``Docker-Content-Digest`` header (when sent) must match the bytes.
        Raises ``SizeLimitError`` over ``max_manifest_bytes``, ``DigestMismatchError``
        (after retries) when the bytes do not match, ``NotFoundError`` when unknown.
        """
        check_repository(repository)
        ref = _reference_text(reference)
        what = f"manifest {repository}@{ref}" if isinstance(reference, Digest) else (
            f"manifest {repository}:{ref}"
        )
        last: IntegrityError | None = None
        for attempt in range(1, self.config.retry.max_attempts + 1):
            response = self._http.send(
                "GET", f"/v2/{repository}/manifests/{ref}", what=what, stream=True,
                headers={"Accept": ", ".join(MANIFEST_ACCEPT)},
            )
            try:
                data = self._read_capped(response, self.config.max_manifest_bytes, what)
            except httpx.TransportError as exc:
                last = IntegrityError(f"{what}: the download broke off ({exc})",
                                      hint="the connection is unreliable; retry")
                self._http.backoff(attempt, what, str(last))
                continue
            finally:
                response.close()
            expected = reference if isinstance(reference, Digest) else None
            header = response.headers.get("Docker-Content-Digest")
            actual = Digest.of(data, expected.algorithm if expected else "sha256")
            if expected is None and header:
                announced = Digest.parse(header)
                actual = Digest.of(data, announced.algorithm)
                if announced != actual:
                    raise DigestMismatchError(
                        f"{what}: the registry's Docker-Content-Digest header", str(announced),
                        str(actual),
                        hint="the registry (or a proxy) is inconsistent; do not trust this tag",
                    )
            if expected is not None and actual != expected:
                last = DigestMismatchError(what, str(expected), str(actual))
                self._http.backoff(attempt, what, "corrupted bytes")
                continue
            media = media_type_of(data, response.headers.get("Content-Type"))
            return FetchedManifest(actual, media, data)
        assert last is not None
        raise last

    def manifest_exists(self, repository: str, digest: Digest) -> bool:
        """Whether a manifest with ``digest`` is in ``repository``."""
        try:
            self.resolve(repository, digest)
        except NotFoundError:
            return False
        return True

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        """Whether ``repository`` holds the blob (``HEAD``; 404 is ``False``)."""
        check_repository(repository)
        response = self._http.send(
            "HEAD", f"/v2/{repository}/blobs/{digest}", what=f"blob {repository}@{digest}",
            ok=(200, 404),
        )
        return response.status_code == 200

    def fetch_blob(self, repository: str, descriptor: Descriptor, dest: Path) -> None:
        """Stream a blob to ``dest``, moved there only once digest and size match.

        Raises ``SizeLimitError`` when the blob is larger than its descriptor or the
        configured cap, ``DigestMismatchError`` when it stays corrupted after retries.
        """

        def attempt(what: str) -> IntegrityError | None:
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.partial-")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    problem = self._download_verified(repository, descriptor, out, what)
                if problem is None:
                    os.replace(tmp, dest)
                return problem
            finally:
                tmp.unlink(missing_ok=True)

        self._retry_blob(repository, descriptor, attempt)

    def fetch_blob_bytes(self, repository: str, descriptor: Descriptor,
                         max_bytes: int | None = None) -> bytes:
        """A small blob (a config) in memory, verified. ``max_bytes`` defaults to the
        manifest cap; larger descriptors are refused before any request."""
        cap = self.config.max_manifest_bytes if max_bytes is None else max_bytes
        if descriptor.size > cap:
            raise SizeLimitError(
                f"blob {repository}@{descriptor.digest} is {descriptor.size} bytes, over the "
                f"{cap}-byte limit", hint="refusing to read it into memory")
        buffer = io.BytesIO()

        def attempt(what: str) -> IntegrityError | None:
            buffer.seek(0)
            buffer.truncate()
            return self._download_verified(repository, descriptor, buffer, what)

        self._retry_blob(repository, descriptor, attempt)
        return buffer.getvalue()

    def _retry_blob(self, repository: str, descriptor: Descriptor,
                    attempt: Callable[[str], IntegrityError | None]) -> None:
        """Run ``attempt`` until it reports no problem, retrying broken or corrupted
        downloads per the policy; raises the last problem."""
        check_repository(repository)
        what = f"blob {repository}@{descriptor.digest}"
        self._check_blob_size(descriptor.size, what)
        key = str(descriptor.digest)
        self.progress.start(key, f"pull {descriptor.digest.hex[:12]}", descriptor.size)
        last: IntegrityError | None = None
        for number in range(1, self.config.retry.max_attempts + 1):
            try:
                last = attempt(what)
            except httpx.TransportError as exc:
                last = IntegrityError(f"{what}: the download broke off ({exc})",
                                      hint="the connection is unreliable; retry")
            except BaseException:
                self.progress.finish(key, "failed")
                raise
            if last is None:
                self.progress.finish(key, "done")
                return
            if number < self.config.retry.max_attempts:
                self._http.backoff(number, what, str(last))
        self.progress.finish(key, "failed")
        assert last is not None
        raise last

    def _download_verified(self, repository: str, descriptor: Descriptor, out: Any,
                           what: str) -> IntegrityError | None:
        actual, size = self._download_blob(repository, descriptor, out, what)
        if size != descriptor.size:
            return IntegrityError(f"{what}: got {size} bytes, the descriptor says "
                                  f"{descriptor.size}", hint="the download was truncated; retry")
        if actual != descriptor.digest:
            return DigestMismatchError(what, str(descriptor.digest), str(actual))
        return None

    def list_tags(self, repository: str, *, missing_ok: bool = False) -> list[str]:
        """All tags of ``repository``, following ``Link`` pagination.

        With ``missing_ok``, an unknown repository gives ``[]`` instead of ``NotFoundError``.
        """
        check_repository(repository)
        try:
            return self._paginate(f"/v2/{repository}/tags/list", "tags", f"tags of {repository}")
        except NotFoundError:
            if missing_ok:
                return []
            raise

    def list_repositories(self) -> list[str]:
        """Every repository of the registry (``/v2/_catalog``, following ``Link`` pagination).

        Raises ``UnsupportedError``/``AuthorizationError`` where the catalog is disabled.
        """
        return self._paginate("/v2/_catalog", "repositories", f"catalog of {self.registry}")

    def _paginate(self, path: str, key: str, what: str) -> list[str]:
        items: list[str] = []
        next_path: str | None = f"{path}?n={self.config.tag_page_size}"
        seen: set[str] = set()
        while next_path is not None and next_path not in seen:
            seen.add(next_path)
            response = self._http.send("GET", next_path, what=what)
            page = _json_object(response, what).get(key) or []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise RegistryError(f"the {what} is malformed",
                                    hint="the registry is not distribution-spec compliant")
            items.extend(page)
            match = _LINK_NEXT.search(response.headers.get("Link", ""))
            next_path = match.group(1) if match else None
        return items

    def referrers(
        self, repository: str, digest: Digest, *, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``: the referrers API, or, where the
        registry answers 404, the ``sha256-<hex>`` tag-schema index."""
        check_repository(repository)
        what = f"referrers of {repository}@{digest}"
        params = {"artifactType": artifact_type} if artifact_type else None
        response = self._http.send(
            "GET", f"/v2/{repository}/referrers/{digest}", what=what, ok=(200, 404),
            params=params, headers={"Accept": OCI_INDEX},
        )
        if response.status_code == 200:
            index = _parse_index(response.content, what)
        else:
            try:
                fetched = self.get_manifest(repository, digest.tag_form)
            except NotFoundError:
                return []
            index = _parse_index(fetched.data, what)
        found = index.manifests
        if artifact_type:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    # -- writes --------------------------------------------------------------

    def push_blob(
        self,
        repository: str,
        source: bytes | Path,
        digest: Digest | None = None,
        *,
        mount_from: Sequence[str] = (),
    ) -> str:
        """Make the blob present in ``repository``; returns ``"skipped"`` (already
        there), ``"mounted"`` (cross-repository mount, no bytes sent) or ``"uploaded"``.

        Raises ``IntegrityError`` when ``source`` does not hash to ``digest``.
        """
        check_repository(repository)
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        if digest is None:
            digest = digest_of(source, "sha256")
        key = str(digest)
        self._check_blob_size(size, f"blob {digest}")
        self.progress.start(key, f"push {digest.hex[:12]}", size)
        if self.blob_exists(repository, digest):
            self.stats.add(blobs_skipped=1)
            self.progress.finish(key, "skipped")
            return "skipped"
        location: str | None = None
        for source_repo in mount_from:
            if source_repo == repository:
                continue
            response = self._http.send(
                "POST", f"/v2/{repository}/blobs/uploads/",
                params={"mount": str(digest), "from": source_repo},
                what=f"mount of blob {digest} from {source_repo} into {repository}",
                ok=(201, 202), idempotent=False,
            )
            if response.status_code == 201:
                self.stats.add(blobs_mounted=1)
                self.progress.finish(key, "mounted")
                return "mounted"
            location = response.headers.get("Location")
            break
        self._uploader.upload(repository, source, digest, size, location)
        return "uploaded"

    def mount_blob(self, repository: str, digest: Digest, from_repository: str) -> bool:
        """Ask for a cross-repository mount of ``digest`` from ``from_repository``;
        ``True`` when the registry mounted it (no bytes sent). When it declines, the
        upload session it opened instead is cancelled and ``False`` returned."""
        check_repository(repository)
        check_repository(from_repository)
        response = self._http.send(
            "POST", f"/v2/{repository}/blobs/uploads/",
            params={"mount": str(digest), "from": from_repository},
            what=f"mount of blob {digest} from {from_repository} into {repository}",
            ok=(201, 202), idempotent=False,
        )
        if response.status_code == 201:
            self.stats.add(blobs_mounted=1)
            return True
        location = response.headers.get("Location")
        if location:
            with contextlib.suppress(RegistryError):
                self._http.send("DELETE", location, what="cancel of an unused upload session",
                                ok=(204, 200, 202, 404), idempotent=False)
        return False

    def push_manifest(
        self, repository: str, data: bytes, media_type: str, *, tag: str | None = None
    ) -> Digest:
        """Put a manifest by digest, or under ``tag``; returns its digest.

        Raises ``SizeLimitError`` over the manifest cap and ``DigestMismatchError``
        when the registry reports another digest for it.
        """
        check_repository(repository)
        if tag is not None:
            check_tag(tag)
        digest = Digest.of(data)
        what = f"manifest {repository}:{tag}" if tag else f"manifest {repository}@{digest}"
        if len(data) > self.config.max_manifest_bytes:
            raise SizeLimitError(
                f"{what} is {len(data)} bytes, over the {self.config.max_manifest_bytes}-byte "
                "limit", hint="registries refuse manifests this large")
        response = self._http.send(
            "PUT", f"/v2/{repository}/manifests/{tag or digest}", what=what, ok=(201,),
            headers={"Content-Type": media_type}, content=data,
        )
        header = response.headers.get("Docker-Content-Digest")
        if header and Digest.parse(header) != digest:
            raise DigestMismatchError(f"{what}: the registry stored it", str(digest), header)
        return digest

    def tag_manifest(self, repository: str, digest: Digest, tag: str) -> None:
        """Point ``tag`` at an existing manifest (no blob is uploaded)."""
        fetched = self.get_manifest(repository, digest)
        self.push_manifest(repository, fetched.data, fetched.media_type, tag=tag)

    def delete_manifest(self, repository: str, digest: Digest) -> None:
        """Delete a manifest by digest. Raises ``UnsupportedError`` where disabled."""
        check_repository(repository)
        self._http.send("DELETE", f"/v2/{repository}/manifests/{digest}",
                        what=f"manifest {repository}@{digest}", ok=(202, 200))

    def delete_blob(self, repository: str, digest: Digest) -> None:
        """Delete a blob. Raises ``UnsupportedError`` where disabled."""
        check_repository(repository)
        self._http.send("DELETE", f"/v2/{repository}/blobs/{digest}",
                        what=f"blob {repository}@{digest}", ok=(202, 200))

    # -- internals -------------------------------------------------------------

    def _check_blob_size(self, size: int, what: str) -> None:
        if size > self.config.max_blob_bytes:
            raise SizeLimitError(
                f"{what} is {size} bytes, over the {self.config.max_blob_bytes}-byte blob limit",
                hint="raise ClientConfig.max_blob_bytes if this is intended")

    def _read_capped(self, response: httpx.Response, cap: int, what: str) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise SizeLimitError(
                f"{what} is {declared} bytes, over the {cap}-byte limit for manifests",
                hint="refusing to read it; check that the reference is the intended artifact")
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > cap:
                raise SizeLimitError(f"{what} is over the {cap}-byte limit for manifests",
                                     hint="refusing to read the rest")
            chunks.append(chunk)
        self.stats.add(bytes_downloaded=total)
        return b"".join(chunks)

    def _download_blob(self, repository: str, descriptor: Descriptor, out: Any,
                       what: str) -> tuple[Digest, int]:
        hasher = hashlib.new(descriptor.digest.algorithm)
        size = 0
        key = str(descriptor.digest)
        with contextlib.closing(self._http.send(
            "GET", f"/v2/{repository}/blobs/{descriptor.digest}", what=what, stream=True,
        )) as response:
            for chunk in response.iter_bytes(self.config.chunk_size):
                size += len(chunk)
                if size > descriptor.size:
                    raise SizeLimitError(
                        f"{what} is larger than the {descriptor.size} bytes its descriptor says",
                        hint="the registry serves other content than was published; "
                        "do not use it")
                hasher.update(chunk)
                out.write(chunk)
                self.progress.advance(key, len(chunk))
        self.stats.add(bytes_downloaded=size)
        return Digest(descriptor.digest.algorithm, hasher.hexdigest()), size


def _reference_text(reference: str | Digest) -> str:
    if isinstance(reference, Digest):
        return str(reference)
    check_tag(reference)
    return reference


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RegistryError(f"{what} is not a JSON object",
                            hint="the registry is not distribution-spec compliant")
    return body


def _parse_index(data: bytes, what: str) -> Index:
    parsed = parse_manifest(data, what=what)
    if not isinstance(parsed, Index):
        raise ManifestFormatError(f"{what} is not an OCI index")
    return parsed
