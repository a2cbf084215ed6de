"""Every limit of the OCI layer in one typed, immutable object."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for idempotent requests: connection errors, 408, 429 and 5xx.

    The delay before attempt ``n`` (1-based retry count) is
    ``min(max_delay, base_delay * 2**(n-1))`` scaled by a random factor in
    ``[0.5, 1.0]`` (jitter); a ``Retry-After`` header replaces it, capped at
    ``retry_after_ceiling``.
    """

    max_attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    retry_after_ceiling: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.retry_after_ceiling))
        backoff = min(self.max_delay, self.base_delay * (2.0 ** (retry - 1)))
        return backoff * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class ClientConfig:
    """Sizes, timeouts, retries and concurrency of a ``RegistryClient``."""

    #: Manifests (and JSON config blobs) larger than this are refused before parsing.
    max_manifest_bytes: int = 4 * MiB
    #: Blobs larger than this are refused even when a descriptor announces them.
    max_blob_bytes: int = 64 * 1024 * MiB
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Parallel blob transfers in a copy or push of several blobs.
    concurrency: int = 4
    #: Read/stream chunk size, and the chunk size of chunked uploads.
    chunk_size: int = 4 * MiB
    #: Upload blobs in chunks (PATCH) instead of one streamed PUT.
    chunked_upload: bool = False
    #: Page size asked for when listing tags (the registry may return fewer).
    tag_page_size: int = 1000
