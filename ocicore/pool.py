"""One ``RegistryClient`` per registry host, made on first use and shared after."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ocicore.client import RegistryClient


class ClientPool:
    """``pool(host)`` returns the client for ``host``; ``close()`` closes them all.

    ``factory`` builds a client for a host (credentials, TLS and plain-HTTP choices
    are the factory's); ``seed`` clients are used as they are for their hosts.
    """

    def __init__(self, factory: Callable[[str], RegistryClient],
                 *seed: RegistryClient) -> None:
        self._factory = factory
        self._clients = {client.registry: client for client in seed}
        self._owned: list[RegistryClient] = []
        self._lock = threading.Lock()

    def __call__(self, registry: str) -> RegistryClient:
        with self._lock:
            client = self._clients.get(registry)
            if client is None:
                client = self._factory(registry)
                self._clients[registry] = client
                self._owned.append(client)
            return client

    def close(self) -> None:
        for client in self._owned:
            client.close()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
