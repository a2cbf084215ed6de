"""Check that a manifest or index and everything it references is present.

Used by promotion (the closure must be whole before a channel moves), by the
appliance's ``verify`` and by the registry audit. Manifests are fetched by digest
(so their bytes are verified); blobs are checked with ``HEAD``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocicore.digest import Digest
from ocicore.errors import NotFoundError, ToolkitError
from ocicore.models import Index
from ocicore.store import ContentStore


@dataclass(frozen=True)
class ClosureReport:
    """What was checked under a root manifest, and what is missing or broken."""

    manifests: int
    blobs: int
    problems: tuple[str, ...]

    @property
    def whole(self) -> bool:
        return not self.problems


def check_closure(store: ContentStore, repository: str, digest: Digest) -> ClosureReport:
    """Walk ``digest`` in ``repository``: every child manifest readable and verified,
    every blob present. Problems are collected (one line each), not raised."""
    problems: list[str] = []
    seen: set[Digest] = set()
    blobs = 0
    pending = [digest]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            parsed = store.get_manifest(repository, current).parse()
        except NotFoundError:
            problems.append(f"manifest {repository}@{current} is missing")
            continue
        except ToolkitError as exc:
            problems.append(f"manifest {repository}@{current} is unreadable: {exc.message}")
            continue
        if isinstance(parsed, Index):
            pending.extend(child.digest for child in parsed.manifests)
            continue
        for blob in parsed.blobs():
            blobs += 1
            if not store.blob_exists(repository, blob.digest):
                problems.append(f"blob {repository}@{blob.digest} of manifest {current} is "
                                "missing")
    return ClosureReport(len(seen), blobs, tuple(problems))
