"""``control_plane/build.toml``: how the control-plane image is built, validated.

The file says what a reader of a Dockerfile would look for, as data: the base image, the
layers appended to it in order, the user, and the image config. ``publisher.image_build``
reads it; no Docker daemon is involved. Paths of the build machine (``layout``,
``requirements``, ``wheels``, ``source``) are relative to the repository root; paths in
the image are absolute. Unknown keys are refused, and every mistake is one line naming
the key and the rule (``build.toml: layers.2.mode: '0779' is not an octal mode``).

Format::

    [base]                              # by digest; either an OCI layout + tag …
    layout = ".tools/base-image"        #   (the tag is resolved to a digest once, and
    repository = "base/debian-python3"  #    that digest is recorded in the image; a
    tag = "bookworm-python3"            #    layout scopes its tags by repository)
    # digest = "sha256:…"               #   optional pin: the tag must resolve to it
    # reference = "reg.example/debian-python3@sha256:…"   # … or a registry reference

    [python]                            # for layers of kind "python-requirements"
    version = "3.11"                    # the base image's CPython (major.minor)
    glibc = "2.36"                      # the base image's glibc: newest manylinux tag
    requirements = "control_plane/requirements.lock"
    wheels = ".tools/wheels"            # installed with --no-index: the build is offline

    [user]                              # the account the service runs as
    name = "control-plane"
    uid = 10001
    gid = 10001
    home = "/var/lib/control-plane"
    shell = "/usr/sbin/nologin"

    [[layers]]                          # one OCI layer each, in this order
    kind = "accounts"                   # /etc/passwd, /etc/group with [user] added;
                                        # left out when the base already has the user
    [[layers]]
    kind = "python-requirements"        # [python].requirements, installed into dest
    dest = "/opt/control-plane/site-packages"

    [[layers]]
    kind = "directory"                  # an (empty) directory with owner and mode
    path = "/var/lib/control-plane"
    owner = "10001:10001"
    mode = "0750"

    [[layers]]
    kind = "python-packages"            # our packages, copied from the source tree
    source = "."
    packages = ["ocicore", "consumer", "control_plane"]
    include = ["*.py", "py.typed"]      # file-name patterns
    exclude = ["control_plane/deploy"]  # source-relative paths left out
    dest = "/opt/control-plane/lib"

    [config]
    user = "10001:10001"                # numeric: Kubernetes' runAsNonRoot can check it
    entrypoint = ["/usr/bin/python3", "-m", "control_plane"]
    cmd = []
    workdir = "/opt/control-plane"
    exposed_ports = ["8080/tcp"]
    stop_signal = "SIGTERM"

    [config.env]
    PYTHONPATH = "/opt/control-plane/lib:/opt/control-plane/site-packages"

    [labels]                            # ${version} ${revision} ${source} ${created}
    "org.opencontainers.image.version" = "${version}"

Every layer is owned by root and read-only to the service (files 0644, directories
0755) unless it says otherwise (``directory`` layers: ``owner`` and ``mode``).
"""

from __future__ import annotations

import posixpath
import re
import string
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ocicore.digest import Digest
from ocicore.errors import InvalidInputError, InvalidReferenceError
from ocicore.reference import Reference, check_repository, check_tag

#: The placeholders label values may use, filled from the build's inputs.
LABEL_PLACEHOLDERS = frozenset({"version", "revision", "source", "created"})

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PORT = re.compile(r"^([0-9]{1,5})/(tcp|udp|sctp)$")
_OWNER = re.compile(r"^([0-9]{1,10}):([0-9]{1,10})$")
_ACCOUNT_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PACKAGE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION = re.compile(r"^3\.[0-9]{1,2}$")
_GLIBC = re.compile(r"^2\.[0-9]{1,2}$")
_SIGNAL = re.compile(r"^(SIG[A-Z0-9+-]+|[0-9]{1,2})$")


class ImageSpecError(InvalidInputError):
    """build.toml is missing, unreadable or invalid."""


# -- field types --------------------------------------------------------------------------


def _image_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path in the image")
    if posixpath.normpath(value) != value or "//" in value or value == "/":
        raise ValueError(f"{value!r} must be a normalised path (no '..', '.', '//', "
                         "trailing '/') below '/'")
    if "\\" in value or "\x00" in value:
        raise ValueError(f"{value!r} contains a backslash or NUL")
    return value


def _local_path(value: str) -> str:
    if not value or value.startswith("/") or ".." in Path(value).parts:
        raise ValueError(f"{value!r} must be a path relative to the repository root, "
                         "without '..'")
    return value


def _owner(value: str) -> str:
    match = _OWNER.match(value)
    if match is None:
        raise ValueError(f"{value!r} must be numeric 'uid:gid', e.g. '10001:10001'")
    return value


def _mode(value: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3,4}", value) or int(value, 8) > 0o1777:
        raise ValueError(f"{value!r} is not an octal mode in 0000..1777 such as '0750' "
                         "(setuid/setgid are not allowed)")
    return value


def _port(value: str) -> str:
    match = _PORT.match(value)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise ValueError(f"{value!r} must be 'PORT/tcp' (or udp, sctp) with PORT 1..65535")
    return value


def _account_name(value: str) -> str:
    if not _ACCOUNT_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid user/group name (lowercase, digits, "
                         "'-', '_'; at most 32 characters)")
    return value


ImagePath = Annotated[str, AfterValidator(_image_path)]
LocalPath = Annotated[str, AfterValidator(_local_path)]
Owner = Annotated[str, AfterValidator(_owner)]
Mode = Annotated[str, AfterValidator(_mode)]
Port = Annotated[str, AfterValidator(_port)]
AccountName = Annotated[str, AfterValidator(_account_name)]
AccountId = Annotated[int, Field(ge=1, le=2**31 - 1)]


def parse_owner(value: str) -> tuple[int, int]:
    """``"uid:gid"`` → ``(uid, gid)`` (the value has been validated)."""
    uid, _, gid = value.partition(":")
    return int(uid), int(gid)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- sections -----------------------------------------------------------------------------


class BaseSection(_Section):
    """The base image: an OCI layout and tag (optionally pinned), or a registry
    reference pinned by digest."""

    layout: LocalPath | None = None
    repository: str | None = None
    tag: str | None = None
    digest: Digest | None = None
    reference: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BaseSection:
        if self.reference is not None:
            if self.layout is not None or self.tag is not None or self.repository is not None:
                raise ValueError("give either 'reference' or 'layout', 'repository' and "
                                 "'tag', not both")
            try:
                ref = Reference.parse(self.reference, default_tag=None)
            except InvalidReferenceError as exc:
                raise ValueError(exc.message) from None
            if ref.digest is None:
                raise ValueError(f"reference {self.reference!r} must be pinned by digest "
                                 "(…@sha256:<hex>): the base is an input of the build")
            if self.digest is not None and self.digest != ref.digest:
                raise ValueError("'digest' differs from the digest in 'reference'")
            return self
        if self.layout is None or self.tag is None or self.repository is None:
            raise ValueError("give 'layout', 'repository' and 'tag' (an OCI layout), or "
                             "'reference' (registry/repository@sha256:…)")
        try:
            check_repository(self.repository)
            check_tag(self.tag)
        except InvalidReferenceError as exc:
            raise ValueError(exc.message) from None
        return self


class PythonSection(_Section):
    version: Annotated[str, Field(pattern=_VERSION.pattern)] = "3.11"
    glibc: Annotated[str, Field(pattern=_GLIBC.pattern)] = "2.36"
    requirements: LocalPath
    wheels: LocalPath


class UserSection(_Section):
    name: AccountName
    uid: AccountId
    gid: AccountId
    group: AccountName | None = None  # default: the user's name
    home: ImagePath = "/nonexistent"
    shell: ImagePath = "/usr/sbin/nologin"
    gecos: Annotated[str, Field(pattern=r"^[^:\n]*$")] = ""

    @property
    def group_name(self) -> str:
        return self.group or self.name


class AccountsLayer(_Section):
    kind: Literal["accounts"]
    comment: str = "user and group for the service"


class PythonRequirementsLayer(_Section):
    kind: Literal["python-requirements"]
    dest: ImagePath
    comment: str = "third-party Python packages"


class DirectoryLayer(_Section):
    kind: Literal["directory"]
    path: ImagePath
    owner: Owner = "0:0"
    mode: Mode = "0755"
    comment: str = "a directory"


class PythonPackagesLayer(_Section):
    kind: Literal["python-packages"]
    source: LocalPath = "."
    packages: list[Annotated[str, Field(pattern=_PACKAGE.pattern)]] = Field(min_length=1)
    include: list[str] = Field(default_factory=lambda: ["*.py", "py.typed"], min_length=1)
    exclude: list[LocalPath] = Field(default_factory=list)
    dest: ImagePath
    comment: str = "application packages"


Layer = Annotated[
    AccountsLayer | PythonRequirementsLayer | DirectoryLayer | PythonPackagesLayer,
    Field(discriminator="kind"),
]


class ConfigSection(_Section):
    user: Owner
    entrypoint: list[str] = Field(min_length=1)
    cmd: list[str] = Field(default_factory=list)
    workdir: ImagePath | None = None
    env: dict[str, str] = Field(default_factory=dict)
    exposed_ports: list[Port] = Field(default_factory=list)
    stop_signal: Annotated[str, Field(pattern=_SIGNAL.pattern)] | None = None

    @model_validator(mode="after")
    def _check(self) -> ConfigSection:
        if not self.entrypoint[0].startswith("/"):
            raise ValueError(f"entrypoint: {self.entrypoint[0]!r} must be an absolute path "
                             "(the image has no shell to search PATH with)")
        for name, value in self.env.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"env: {name!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
            if "\x00" in value:
                raise ValueError(f"env: {name} contains a NUL character")
        if len(set(self.exposed_ports)) != len(self.exposed_ports):
            raise ValueError("exposed_ports: a port is listed twice")
        return self


class ImageBuildSpec(_Section):
    """The whole build description (``control_plane/build.toml``)."""

    base: BaseSection
    python: PythonSection | None = None
    user: UserSection | None = None
    layers: list[Layer] = Field(min_length=1)
    config: ConfigSection
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ImageBuildSpec:
        kinds = [layer.kind for layer in self.layers]
        for once in ("accounts", "python-requirements"):
            if kinds.count(once) > 1:
                raise ValueError(f"layers: at most one layer of kind {once!r}")
        if "accounts" in kinds and self.user is None:
            raise ValueError("layers: an 'accounts' layer needs a [user] section")
        if "python-requirements" in kinds and self.python is None:
            raise ValueError("layers: a 'python-requirements' layer needs a [python] section")
        if self.user is not None:
            expected = f"{self.user.uid}:{self.user.gid}"
            if self.config.user != expected:
                raise ValueError(f"config.user {self.config.user!r} is not [user]'s "
                                 f"'{expected}'")
        for name, value in self.labels.items():
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"labels: {name!r} is not a label name")
            _check_template(name, value)
        return self


def _check_template(name: str, value: str) -> None:
    template = string.Template(value)
    if not template.is_valid():
        raise ValueError(f"labels.{name}: {value!r} has a malformed '$' placeholder "
                         "(write '$$' for a literal '$')")
    unknown = set(template.get_identifiers()) - LABEL_PLACEHOLDERS
    if unknown:
        raise ValueError(f"labels.{name}: unknown placeholder ${{{sorted(unknown)[0]}}}; "
                         f"known: {', '.join(sorted(LABEL_PLACEHOLDERS))}")


def render_labels(spec: ImageBuildSpec, values: dict[str, str]) -> dict[str, str]:
    """The labels with their placeholders filled from ``values``."""
    return {name: string.Template(value).substitute(values) for name, value in spec.labels.items()}


# -- loading ------------------------------------------------------------------------------


def parse_build_spec(text: str, *, name: str = "build.toml") -> ImageBuildSpec:
    """Validate TOML text; raises ``ImageSpecError`` with one line per cause."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ImageSpecError(f"{name} is not valid TOML: {exc}") from None
    try:
        return ImageBuildSpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(
                str(p) for p in err["loc"]
                if not str(p).startswith(("function-", "str", "list[")) and p not in
                ("accounts", "python-requirements", "directory", "python-packages")
            )
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {loc}: {message}" if loc else f"{name}: {message}")
        raise ImageSpecError(
            "; ".join(lines), hint="see publisher/image_spec.py for the format"
        ) from None


def load_build_spec(path: Path) -> ImageBuildSpec:
    """Read and validate ``path``; raises ``ImageSpecError``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImageSpecError(f"{path} does not exist",
                             hint="run from the repository root or pass the build file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageSpecError(f"cannot read {path}: {exc}") from None
    return parse_build_spec(text, name=Path(path).name)
