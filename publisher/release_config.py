"""``release.toml``: what this repository's appliance publishes, validated.

Every mistake is reported as one line naming the key and the rule, e.g.
``release.toml: images.algaCore.repository: invalid repository name 'Alga/x' …``.
Unknown keys are refused (a typo must not silently drop a setting).

Example::

    [registry]
    host = "ghcr.io"            # --registry overrides it
    namespace = "alga"

    [appliance]
    name = "appliance"
    channels = ["stable", "nightly"]
    values_profile = "single-node"

    [images]                    # key -> repository under the registry; tag from the build
    algaCore = "alga/sebastian"
    pgbouncer = { repository = "alga/mirror/pgbouncer", tag = "1.24.1" }

    [charts]
    names = ["sebastian", "pgbouncer"]

    [control_plane]
    build = "control_plane/build.toml"

    [signing]
    key = "keys/release.key"    # password: APPLIANCE_RELEASE_KEY_PASSWORD
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ocicore.errors import InvalidInputError, InvalidReferenceError
from ocicore.reference import check_repository, check_tag

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ReleaseConfigError(InvalidInputError):
    """release.toml is missing, unreadable or invalid."""


def _repository(value: str) -> str:
    try:
        check_repository(value)
    except InvalidReferenceError as exc:
        raise ValueError(exc.message) from None
    return value


def _tag(value: str) -> str:
    try:
        check_tag(value)
    except InvalidReferenceError as exc:
        raise ValueError(exc.message) from None
    return value


def _name(value: str) -> str:
    if not _NAME.match(value) or len(value) > 53:
        raise ValueError(f"{value!r} must be a lowercase DNS label of at most 53 characters")
    return value


RepositoryName = Annotated[str, AfterValidator(_repository)]
TagName = Annotated[str, AfterValidator(_tag)]
Name = Annotated[str, AfterValidator(_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistrySection(_Section):
    host: str = Field(min_length=1)
    namespace: RepositoryName
    plain_http: bool = False


class ApplianceSection(_Section):
    name: Name
    channels: list[TagName] = Field(min_length=1)
    values_profile: Name = "single-node"


class ImageSection(_Section):
    repository: RepositoryName
    #: A fixed tag (third-party images mirrored at a pinned version); otherwise the tag
    #: comes from the build (``--image-tag key=tag``, default: the release version).
    tag: TagName | None = None


class ChartsSection(_Section):
    path: str = "charts"
    names: list[Name] = Field(min_length=1)
    lint: bool = True


class FluxSection(_Section):
    path: str = "flux"


class ControlPlaneSection(_Section):
    build: str = "control_plane/build.toml"


class SigningSection(_Section):
    key: str
    #: Channel bindings signed at promotion expire after this many days (0: never).
    binding_days: int = Field(default=0, ge=0)


class RepositoriesSection(_Section):
    """Repository names; defaults follow DESIGN.md §2."""

    charts: RepositoryName | None = None
    config: RepositoryName | None = None
    control_plane: RepositoryName | None = None
    release: RepositoryName | None = None


class ReleaseConfig(_Section):
    registry: RegistrySection
    appliance: ApplianceSection
    images: dict[str, ImageSection | RepositoryName]
    charts: ChartsSection
    flux: FluxSection = FluxSection()
    control_plane: ControlPlaneSection = ControlPlaneSection()
    signing: SigningSection
    repositories: RepositoriesSection = RepositoriesSection()

    def image(self, key: str) -> ImageSection:
        value = self.images[key]
        return value if isinstance(value, ImageSection) else ImageSection(repository=value)

    @property
    def charts_repository(self) -> str:
        return self.repositories.charts or f"{self.registry.namespace}/charts"

    @property
    def config_repository(self) -> str:
        return self.repositories.config or (
            f"{self.registry.namespace}/{self.appliance.name}-config")

    @property
    def control_plane_repository(self) -> str:
        return self.repositories.control_plane or (
            f"{self.registry.namespace}/{self.appliance.name}-control-plane")

    @property
    def release_repository(self) -> str:
        return self.repositories.release or (
            f"{self.registry.namespace}/{self.appliance.name}-release")


def load_release_config(path: Path) -> ReleaseConfig:
    """Read and validate ``path``; raises ``ReleaseConfigError`` with one line per cause."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReleaseConfigError(f"{path} does not exist",
                                 hint="run from the repository root or pass --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReleaseConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ReleaseConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        config = ReleaseConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "str")))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        message = err["msg"].removeprefix("Value error, ")
        raise ReleaseConfigError(f"{path.name}: {loc}: {message}{more}",
                                 hint="see publisher/release_config.py for the format") from None
    if "algaCore" not in config.images:
        raise ReleaseConfigError(f"{path.name}: images.algaCore: required (the core image)")
    return config
