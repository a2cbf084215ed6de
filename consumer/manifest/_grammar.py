"""The string grammars of release manifest v1, shared by the reader and the JSON Schema.

Each grammar is one regular expression written in the common subset of Python's
``re`` and ECMA-262 (explicit ASCII classes, no ``\\d``/``\\s``/``\\w``, whose Unicode
meaning differs between engines). The reader checks ``re.fullmatch(core, value)``;
the published schema carries ``^(?:core)$(?!\\n)``. The trailing ``(?!\\n)`` is there
because ``$`` in Python, Java, .NET and PCRE also matches before a final newline,
so ``"sha256:…\\n"`` would otherwise pass a schema validator written in those
languages while our reader refuses it. Engines without look-ahead (Go's RE2) should
read ``$(?!\\n)`` as ``\\z``.

A grammar with backtracking has a ``max_length``, checked before the expression
runs and published as ``maxLength``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import AfterValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

_DIGEST = r"sha256:[a-f0-9]{64}"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]{{1,5}})?"
_REPOSITORY = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_NUMERIC = r"(?:0|[1-9][0-9]*)"
_PRERELEASE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = (
    rf"{_NUMERIC}\.{_NUMERIC}\.{_NUMERIC}"
    rf"(?:-{_PRERELEASE_ID}(?:\.{_PRERELEASE_ID})*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
# A calendar-valid date (leap years included, year 0000 excluded) and a UTC time.
_DATE = (
    r"(?!0000)(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
)
_UTC_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?Z"
_PEM_PUBLIC_KEY = (
    r"-----BEGIN PUBLIC KEY-----\r?\n(?:[A-Za-z0-9+/=]{1,76}\r?\n){1,256}"
    r"-----END PUBLIC KEY-----(?:\r?\n)?"
)


def schema_pattern(core: str) -> str:
    """The JSON Schema ``pattern`` equivalent to ``re.fullmatch(core, value)``."""
    return f"^(?:{core})$(?!\\n)"


def show(value: Any, limit: int = 72) -> str:
    """``value`` as JSON on one line, shortened to about ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=True)
    if len(text) <= limit:
        return text
    tail = limit // 3
    return f"{text[: limit - tail - 1]}…{text[-tail:]}"


def json_type(value: Any) -> str:
    """The JSON type name of a parsed JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass(frozen=True)
class Grammar:
    """A pydantic annotation: a JSON string that must match ``core`` entirely.

    ``rule`` completes the sentence "must be …" in error messages and is the
    description of the type in the schema.
    """

    core: str
    rule: str
    max_length: int | None = None
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(self.core))

    def matches(self, value: str) -> bool:
        """Whether ``value`` follows this grammar."""
        too_long = self.max_length is not None and len(value) > self.max_length
        return not too_long and self._regex.fullmatch(value) is not None

    def check(self, value: str) -> str:
        """Return ``value`` if it matches; raise a pydantic error naming the rule."""
        if self.max_length is not None and len(value) > self.max_length:
            raise PydanticCustomError(
                "grammar",
                "must be at most {max} characters long ({rule})",
                {"max": self.max_length, "rule": self.rule},
            )
        if self._regex.fullmatch(value) is None:
            raise PydanticCustomError(
                "grammar", "must be {rule}, not {value}", {"rule": self.rule, "value": show(value)}
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            self.check, core_schema.str_schema(strict=True)
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema: JsonSchemaValue = {"type": "string", "pattern": schema_pattern(self.core)}
        if self.max_length is not None:
            json_schema["maxLength"] = self.max_length
        return json_schema


def _load_public_key(value: str) -> str:
    try:
        load_pem_public_key(value.encode("ascii"))
    except (ValueError, TypeError):
        raise PydanticCustomError(
            "pem_public_key",
            "is a PEM block, but its content is not a public key that can be loaded "
            "(SubjectPublicKeyInfo DER)",
        ) from None
    return value


@dataclass(frozen=True)
class _JsonInteger:
    """A JSON integer in ``[minimum, maximum]``.

    JSON Schema counts ``7.0`` as an integer, so the reader does too (and keeps 7);
    booleans and strings are refused.
    """

    minimum: int
    maximum: int

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PydanticCustomError(
                "integer_type", "must be an integer, not {type}", {"type": json_type(value)}
            )
        if isinstance(value, float) and not value.is_integer():
            raise PydanticCustomError(
                "integer_type", "must be an integer, not {value}", {"value": show(value)}
            )
        if not self.minimum <= value <= self.maximum:
            raise PydanticCustomError(
                "integer_range",
                "must be an integer from {minimum} to {maximum}, not {value}",
                {"minimum": self.minimum, "maximum": self.maximum, "value": show(value)},
            )
        return int(value)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


DIGEST = Grammar(_DIGEST, "'sha256:' followed by 64 lowercase hex characters")
TAG = Grammar(_TAG, "an OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})")
REPOSITORY = Grammar(
    _REPOSITORY, "a repository name such as registry.example.com/alga/appliance-config", 255
)
PINNED_REFERENCE = Grammar(
    rf"{_REPOSITORY}@{_DIGEST}", "a digest-pinned reference 'repository@sha256:<64 hex>'", 512
)
CONTROL_PLANE_REFERENCE = Grammar(
    rf"{_REPOSITORY}@{_DIGEST}|{_REPOSITORY}:{_TAG}|{_TAG}",
    "'repository@sha256:<64 hex>' (or, in older manifests, 'repository:tag' or a bare tag)",
    512,
)
CHART_REFERENCE = Grammar(
    rf"oci://{_REPOSITORY}:{_TAG}", "an OCI chart reference 'oci://repository:tag'", 512
)
CHART_NAME = Grammar(_PATH_COMPONENT, "a chart name (lowercase, as in an OCI repository path)", 128)
CHART_VERSION = Grammar(_SEMVER, "a SemVer 2.0 chart version such as 1.4.0", 256)
PROFILE_NAME = Grammar(_LABEL, "a profile name (lowercase letters, digits and '-', 1-63)")
PROFILE_VALUES_FILE = Grammar(
    rf"{_LABEL}\.{_LABEL}\.yaml", "a file name '<release>.<profile>.yaml' (lowercase labels)"
)
KEY_ID = Grammar(r"[\x21-\x7e]{1,128}", "a key id (1-128 printable ASCII characters, no spaces)")
PEM_PUBLIC_KEY = Grammar(
    _PEM_PUBLIC_KEY, "a PEM public key ('-----BEGIN PUBLIC KEY-----' block)", 24576
)
NON_BLANK = Grammar(r"[\s\S]*[^\t\n\v\f\r ][\s\S]*", "a non-blank string")
UTC_TIMESTAMP = Grammar(
    rf"{_DATE}T{_UTC_TIME}", "an RFC 3339 UTC timestamp such as 2024-05-01T12:00:00Z"
)

Digest = Annotated[str, DIGEST]
Tag = Annotated[str, TAG]
Repository = Annotated[str, REPOSITORY]
PinnedReference = Annotated[str, PINNED_REFERENCE]
ControlPlaneReference = Annotated[str, CONTROL_PLANE_REFERENCE]
ChartReference = Annotated[str, CHART_REFERENCE]
ChartName = Annotated[str, CHART_NAME]
ChartVersion = Annotated[str, CHART_VERSION]
ProfileName = Annotated[str, PROFILE_NAME]
ProfileValuesFile = Annotated[str, PROFILE_VALUES_FILE]
KeyId = Annotated[str, KEY_ID]
PemPublicKey = Annotated[str, PEM_PUBLIC_KEY, AfterValidator(_load_public_key)]
NonBlank = Annotated[str, NON_BLANK]
UtcTimestamp = Annotated[str, UTC_TIMESTAMP]
Sequence = Annotated[int, _JsonInteger(0, 2**53 - 1)]
