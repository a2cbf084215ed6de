"""ocicore: the OCI layer of appliance-release.

Generic OCI only; it knows nothing about releases. Public API:

- ``ocicore.digest.Digest`` and ``ocicore.reference.Reference``: validated value types.
- ``ocicore.models``: ``Descriptor``, ``Manifest``, ``Index`` wire models (unknown fields kept).
- ``ocicore.client.RegistryClient``: read and write a registry over an injected ``httpx.Client``.
- ``ocicore.auth``: credential lookup and the ``httpx.Auth`` flows (bearer challenge, basic).
- ``ocicore.layout``: an OCI image layout (directory or tar) with the same interface.
- ``ocicore.copy``: copy a manifest or index and everything it references between stores.
- ``ocicore.tarpack``: deterministic tar+gzip; ``ocicore.extract``: safe extraction.
- ``ocicore.errors``: the error tree; every error has a message and a hint.
"""
