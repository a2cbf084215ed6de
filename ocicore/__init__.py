"""ocicore: the OCI layer of appliance-release.

Generic OCI only; it knows nothing about releases. Public API:

- ``ocicore.digest.Digest`` and ``ocicore.reference.Reference``: validated value types.
- ``ocicore.models``: ``Descriptor``, ``Manifest``, ``Index`` wire models (unknown fields kept).
- ``ocicore.client.RegistryClient``: read and write a registry over an injected ``httpx.Client``
  (verified streamed downloads, retries, mounts, pagination, referrers).
- ``ocicore.credentials`` (lookup order) and ``ocicore.auth`` (the ``httpx.Auth`` flow).
- ``ocicore.layout.OCILayout``: an OCI image layout (directory or tar) as a store;
  ``ocicore.store.ContentStore`` is what both implement.
- ``ocicore.copy.copy``: a manifest or index and everything it references, between stores.
- ``ocicore.closure.check_closure``: is everything under a manifest present?
- ``ocicore.tarpack``: deterministic tar+gzip; ``ocicore.extract``: safe extraction.
- ``ocicore.config.ClientConfig``: every limit; ``ocicore.progress.Progress``: the protocol.
- ``ocicore.pool.ClientPool``, ``ocicore.jsonutil``, ``ocicore.fsutil``: small helpers.
- ``ocicore.errors``: the error tree; every error has a message and a hint.
"""
