"""The site input of an install: what differs from one appliance to the next.

``SiteSettings`` is a frozen pydantic model; document keys are camelCase (as in the
release manifest), unknown keys are refused (a typo must not silently drop a setting).
``read_site(data)`` parses YAML or JSON bytes; ``parse_site(document)`` an already
parsed mapping. Both raise ``SiteError`` with one line ``site settings: <field>: <rule>``.

Only ``hostname`` is always required. ``databaseHost``, ``smtpHost`` and ``smtpFrom``
are required only when the release's values use the matching placeholder
(``consumer.plan`` names the missing field then).

Example::

    hostname: alga.example.com
    databaseHost: db.internal.example.com
    smtpHost: smtp.example.com
    smtpFrom: noreply@alga.example.com
    interval: 10m          # Flux interval of the parent OCIRepository and Kustomization
    timeout: 10m           # timeout of the parent Kustomization
    plainHttp: false       # the registry speaks plain HTTP (spec.insecure on the OCIRepository)
    cosignPublicKey: |     # verify the config bundle's cosign signature with this key
      -----BEGIN PUBLIC KEY-----
      ...
    tenant:                # the initial tenant, created once (Secret alga/alga-initial-tenant)
      name: Example Ltd
      adminEmail: admin@example.com
      adminPassword: "..."
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import yaml
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ocicore.errors import InvalidInputError

MAX_SITE_BYTES = 1 << 20

_HOST_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})+")
_HOST_OR_IP = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*|[0-9a-fA-F:.]+")
_EMAIL = re.compile(rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_HOST_LABEL}(?:\.{_HOST_LABEL})+")
# Flux's duration grammar (the CRDs' pattern for spec.interval and spec.timeout).
_DURATION = re.compile(r"([0-9]+(\.[0-9]+)?(ms|s|m|h))+")
_PLACEHOLDER_DOMAIN = "example.invalid"


class SiteError(InvalidInputError):
    """The site settings are missing, malformed or incomplete for this release."""


def _hostname(value: str) -> str:
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise ValueError("must be a lowercase DNS name with a dot, e.g. alga.example.com")
    return _not_placeholder(value)


def _host(value: str) -> str:
    if len(value) > 253 or not _HOST_OR_IP.fullmatch(value):
        raise ValueError("must be a lowercase DNS name or an IP address")
    return _not_placeholder(value)


def _email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address, e.g. noreply@alga.example.com")
    return _not_placeholder(value)


def _not_placeholder(value: str) -> str:
    if value.endswith(_PLACEHOLDER_DOMAIN):
        raise ValueError(f"is a placeholder under {_PLACEHOLDER_DOMAIN}; give the real value")
    return value


def _duration(value: str) -> str:
    if not _DURATION.fullmatch(value):
        raise ValueError("must be a Go duration such as 30s, 10m or 1h30m")
    return value


def _public_key_pem(value: str) -> str:
    try:
        load_pem_public_key(value.encode())
    except (ValueError, TypeError):
        raise ValueError("must be a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    return value


Hostname = Annotated[str, AfterValidator(_hostname)]
Host = Annotated[str, AfterValidator(_host)]
Email = Annotated[str, AfterValidator(_email)]
Duration = Annotated[str, AfterValidator(_duration)]
PublicKeyPem = Annotated[str, AfterValidator(_public_key_pem)]


class _Part(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, validate_by_alias=True, validate_by_name=True
    )


class TenantSettings(_Part):
    """The first tenant and its administrator, created by the application's setup."""

    name: str = Field(min_length=1, max_length=200, description="Tenant (company) name.")
    admin_email: Email = Field(alias="adminEmail", description="Administrator's email.")
    admin_password: str = Field(
        alias="adminPassword", min_length=12, max_length=1024, repr=False,
        description="Initial administrator password (at least 12 characters).",
    )


class SiteSettings(_Part):
    """Settings of one appliance site (see the module docstring for an example)."""

    hostname: Hostname = Field(description="Public host name of the application.")
    database_host: Host | None = Field(default=None, alias="databaseHost",
                                       description="PostgreSQL host (pgbouncer, temporal).")
    smtp_host: Host | None = Field(default=None, alias="smtpHost", description="SMTP relay.")
    smtp_from: Email | None = Field(default=None, alias="smtpFrom",
                                    description="Sender address of the application's email.")
    interval: Duration = Field(default="10m", description="Flux interval of the parent objects.")
    timeout: Duration = Field(default="10m", description="Timeout of the parent Kustomization.")
    plain_http: bool = Field(default=False, alias="plainHttp",
                             description="The registry speaks plain HTTP (spec.insecure).")
    cosign_public_key: PublicKeyPem | None = Field(
        default=None, alias="cosignPublicKey", repr=False,
        description="PEM key that Flux verifies the config bundle's cosign signature with.",
    )
    tenant: TenantSettings | None = Field(default=None, description="Initial tenant.")


def parse_site(document: Any, *, what: str = "site settings") -> SiteSettings:
    """``document`` (a parsed mapping) as ``SiteSettings``; raises ``SiteError`` naming the
    first field that is wrong (and how many more are)."""
    if not isinstance(document, Mapping):
        raise SiteError(f"{what}: must be a mapping of settings, not {type(document).__name__}",
                        hint="write them as YAML or JSON keys, e.g. hostname: alga.example.com")
    try:
        return SiteSettings.model_validate(dict(document))
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        path = ".".join(str(part) for part in first["loc"]) or "(top)"
        rule = {"missing": "required", "extra_forbidden": "unknown setting"}.get(
            first["type"], first["msg"].removeprefix("Value error, "))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        hint = "see consumer/site.py for the settings and their format"
        if first["type"] == "extra_forbidden":
            known = sorted(f.alias or n for n, f in SiteSettings.model_fields.items())
            hint = f"known settings: {', '.join(known)}"
        raise SiteError(f"{what}: {path}: {rule}{more}", hint=hint) from None


def read_site(data: bytes, *, what: str = "site settings") -> SiteSettings:
    """Site settings from YAML (or JSON) bytes; raises ``SiteError``."""
    if len(data) > MAX_SITE_BYTES:
        raise SiteError(f"{what}: larger than {MAX_SITE_BYTES} bytes",
                        hint="the site settings are a short YAML file")
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SiteError(f"{what}: not valid UTF-8 YAML: {first}",
                        hint="check the file's syntax") from None
    return parse_site(document, what=what)
