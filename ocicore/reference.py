"""Image references per the distribution spec, normalised as the docker CLI does.

``Reference.parse("nginx")`` is ``docker.io/library/nginx:latest``; a first path
component is a registry host when it contains ``.`` or ``:`` or is ``localhost``.
An optional ``oci://`` prefix (helm's form) is accepted and dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ocicore.digest import Digest
from ocicore.errors import InvalidDigestError, InvalidReferenceError

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io"}
DOCKER_HUB_API_HOST = "registry-1.docker.io"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class Reference:
    """A validated reference: registry host, repository, and a tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        if not _HOST.match(self.registry):
            raise InvalidReferenceError(f"invalid registry host {self.registry!r}")
        check_repository(self.repository)
        if self.tag is not None:
            check_tag(self.tag)

    @classmethod
    def parse(cls, value: str, *, default_tag: str | None = "latest") -> Reference:
        """Parse ``value``; raises ``InvalidReferenceError`` naming the broken rule.

        ``default_tag`` is applied when neither tag nor digest is given (``None`` keeps
        the reference bare, for repository-only references).
        """
        original = value
        if value.startswith("oci://"):
            value = value[len("oci://") :]
        if not value or value != value.strip():
            raise InvalidReferenceError(f"invalid reference {original!r}: empty or padded")
        digest: Digest | None = None
        if "@" in value:
            value, _, digest_text = value.partition("@")
            try:
                digest = Digest.parse(digest_text)
            except InvalidDigestError as exc:
                raise InvalidReferenceError(
                    f"invalid reference {original!r}: {exc.message}", hint=exc.hint
                ) from None
        tag: str | None = None
        slash = value.rfind("/")
        colon = value.rfind(":")
        if colon > slash:
            value, tag = value[:colon], value[colon + 1 :]
        first, sep, rest = value.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
            registry, repository = first, rest
        else:
            registry, repository = DOCKER_HUB, value
        if registry in _DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        if tag is None and digest is None:
            tag = default_tag
        try:
            return cls(registry, repository, tag, digest)
        except InvalidReferenceError as exc:
            raise InvalidReferenceError(
                f"invalid reference {original!r}: {exc.message}",
                hint="a reference looks like registry.example.com/namespace/name:tag or "
                "…/name@sha256:<hex>; repository names are lowercase",
            ) from None

    @property
    def api_host(self) -> str:
        """The host that serves the registry API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/`` in the API: the digest if known, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        if self.tag is None:
            raise InvalidReferenceError(f"{self} has neither a tag nor a digest")
        return self.tag

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, self.digest)

    def pinned(self) -> str:
        """``registry/repository@digest`` (raises when there is no digest)."""
        if self.digest is None:
            raise InvalidReferenceError(f"{self} is not pinned by digest")
        return f"{self.registry}/{self.repository}@{self.digest}"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def check_repository(repository: str) -> None:
    """Raise ``InvalidReferenceError`` unless ``repository`` is a valid repository name."""
    if not repository:
        raise InvalidReferenceError("repository name is empty")
    if len(repository) > _MAX_NAME:
        raise InvalidReferenceError(
            f"repository name is {len(repository)} characters, over the {_MAX_NAME} limit"
        )
    for component in repository.split("/"):
        if not _PATH_COMPONENT.match(component):
            raise InvalidReferenceError(
                f"invalid repository name {repository!r}: component {component!r} must be "
                "lowercase letters and digits separated by '.', '_', '__' or '-'"
            )


def check_tag(tag: str) -> None:
    """Raise ``InvalidReferenceError`` unless ``tag`` is a valid tag."""
    if not _TAG.match(tag):
        raise InvalidReferenceError(
            f"invalid tag {tag!r}: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        )
