"""The inputs of the appliance ISO and the files rendered from them: the validated
``IsoInputs``, the nocloud seed (``user-data``, ``meta-data``) and the bootstrap
environment file. ``publisher.iso`` stages them and remasters the ISO.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import semver
import yaml
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from consumer.signatures import TrustStore
from ocicore.errors import InvalidInputError, InvalidReferenceError
from ocicore.reference import Reference, check_tag

IMAGE_ARCHIVE_NAME = "control-plane.oci.tar"
#: Where the seed's runcmd puts the image archive; bootstrap.sh imports it from there.
HOST_IMAGE_ARCHIVE = f"/usr/local/lib/appliance/images/{IMAGE_ARCHIVE_NAME}"
#: Where things go on the ISO (relative to its root).
OVERLAY_DIR = "appliance/overlay"
IMAGES_DIR = "appliance/images"
SEED_DIR = "nocloud"
BOOTSTRAP_ENV_FILE = "etc/appliance/bootstrap.env"
PLACEHOLDER = re.compile(r"@[A-Z_]+@")


class IsoInputError(InvalidInputError):
    """The inputs of the ISO (name, registry, keys, …) are invalid."""


class StagingError(InvalidInputError):
    """The staging directory is incomplete, not empty, or holds unexpected entries."""


# -- inputs ----------------------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
_VOLUME_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be lowercase letters, digits and '-' (a DNS label)")
    return value


def check_version(value: str) -> str:
    if not semver.Version.is_valid(value):
        raise ValueError("must be a semantic version such as 1.4.0 (no leading 'v')")
    return value


def _check_registry(value: str) -> str:
    host, _, namespace = value.partition("/")
    try:
        Reference(host, f"{namespace}/probe" if namespace else "probe")
    except InvalidReferenceError:
        raise ValueError(
            "must be host[:port] optionally followed by /namespace (lowercase path)"
        ) from None
    return value


def _check_channel(value: str) -> str:
    try:
        check_tag(value)
    except InvalidReferenceError:
        raise ValueError("must be a valid tag (letters, digits, '_', '.', '-')") from None
    return value


def _check_hostname(value: str) -> str:
    labels = value.split(".")
    if len(value) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise ValueError("must be a lowercase RFC 1123 hostname")
    return value


def _check_user(value: str) -> str:
    if not _USER.match(value):
        raise ValueError("must be a POSIX user name (lowercase, starting with a letter or '_')")
    return value


def _check_ssh_key(value: str) -> str:
    if "\n" in value.strip() or not value.strip():
        raise ValueError("each SSH key must be one line")
    try:
        load_ssh_public_key(value.strip().encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(
            f"not an SSH public key ed25519/ecdsa/rsa line: {value.strip()[:40]!r}"
        ) from None
    return value.strip()


def _check_trust_pem(value: str) -> str:
    try:
        TrustStore.from_pem(value.encode(), what="trust_pem")
    except InvalidInputError as exc:
        raise ValueError(exc.message) from None
    return value if value.endswith("\n") else value + "\n"


def check_volume_id(value: str) -> str:
    if not _VOLUME_ID.match(value):
        raise ValueError("must be 1-32 characters of letters, digits, '_', '.', '-'")
    return value


def default_volume_id(name: str, version: str) -> str:
    """``<NAME>_<VERSION>`` in ISO 9660 d-characters (A-Z, 0-9, _), at most 32."""
    return re.sub(r"[^A-Z0-9_]", "_", f"{name}_{version}".upper())[:32]


class IsoInputs(BaseModel):
    """What one appliance ISO is made of; invalid values cannot be constructed.

    The seed mounts the ISO by its volume id (``label``: ``volume_id``, default
    ``default_volume_id(name, version)``); pass the same ``volume_id`` to ``remaster``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, AfterValidator(check_name)]
    version: Annotated[str, AfterValidator(check_version)]
    registry: Annotated[str, AfterValidator(_check_registry)]
    channel: Annotated[str, AfterValidator(_check_channel)]
    hostname: Annotated[str, AfterValidator(_check_hostname)]
    ssh_authorized_keys: Annotated[
        tuple[Annotated[str, AfterValidator(_check_ssh_key)], ...], Field(min_length=1)
    ]
    trust_pem: Annotated[str, AfterValidator(_check_trust_pem)]
    user: Annotated[str, AfterValidator(_check_user)] = "appliance"
    volume_id: Annotated[str, AfterValidator(check_volume_id)] | None = None

    @property
    def label(self) -> str:
        """The ISO's volume id: ``volume_id``, else ``default_volume_id(name, version)``."""
        return self.volume_id or default_volume_id(self.name, self.version)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> IsoInputs:
        """Validate ``data``; raises ``IsoInputError`` naming the first bad field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(inputs)"
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise IsoInputError(
                f"ISO input {loc}: {msg}", hint="fix the value and run again"
            ) from None


# -- the seed and the env file ---------------------------------------------------------


class _SeedDumper(yaml.SafeDumper):
    """Block style; multi-line strings as ``|`` literals; no line folding."""


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_SeedDumper.add_representer(str, _str_presenter)


def _dump_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.dump(
        doc, Dumper=_SeedDumper, sort_keys=False, default_flow_style=False, width=10_000
    )


def render_bootstrap_env(inputs: IsoInputs, template: str) -> str:
    """Fill the ``@REGISTRY@`` and ``@CHANNEL@`` placeholders of the env template.

    The values are validated to a shell-safe alphabet, and the template single-quotes
    them. Raises ``StagingError`` when a placeholder is left unfilled.
    """
    text = template.replace("@REGISTRY@", inputs.registry).replace("@CHANNEL@", inputs.channel)
    leftover = PLACEHOLDER.search(text)
    if leftover:
        raise StagingError(
            f"the bootstrap.env template has an unknown placeholder {leftover.group()}",
            hint="only @REGISTRY@ and @CHANNEL@ are filled in",
        )
    return text


def _install_script(label: str) -> str:
    """The runcmd that copies the overlay and the image from the ISO onto the host."""
    return (
        "set -eu; m=/run/appliance-media; mkdir -p \"$m\"; "
        f"mount -o ro /dev/disk/by-label/{label} \"$m\"; "
        f"cp -R \"$m/{OVERLAY_DIR}/.\" /; "
        f"install -D -m 0644 \"$m/{IMAGES_DIR}/{IMAGE_ARCHIVE_NAME}\" {HOST_IMAGE_ARCHIVE}; "
        "umount \"$m\""
    )


def render_user_data(inputs: IsoInputs, bootstrap_env: str) -> str:
    """The ``#cloud-config`` user-data: hostname, the admin user (SSH keys only, no
    password), ``/etc/appliance/bootstrap.env``, and the runcmd that installs the
    overlay and enables the bootstrap timer."""
    doc: dict[str, Any] = {
        "hostname": inputs.hostname,
        "preserve_hostname": False,
        "ssh_pwauth": False,
        "disable_root": True,
        "users": [
            {
                "name": inputs.user,
                "gecos": "Appliance administrator",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": list(inputs.ssh_authorized_keys),
            }
        ],
        "write_files": [
            {
                "path": f"/{BOOTSTRAP_ENV_FILE}",
                "owner": "root:root",
                "permissions": "0644",
                "content": bootstrap_env,
            }
        ],
        "runcmd": [
            ["/bin/sh", "-c", _install_script(inputs.label)],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "appliance-bootstrap.timer"],
        ],
    }
    return "#cloud-config\n" + _dump_yaml(doc)


def render_meta_data(inputs: IsoInputs) -> str:
    """The NoCloud meta-data: ``instance-id`` (``<name>-<version>``) and hostname."""
    return _dump_yaml(
        {"instance-id": f"{inputs.name}-{inputs.version}", "local-hostname": inputs.hostname}
    )


