"""Content digests per the OCI image spec (``algorithm:encoded``).

The grammar is the image spec's: ``algorithm := component ([+._-] component)*``,
``encoded := [a-zA-Z0-9=_-]+``. Only the registered algorithms we can verify
(sha256, sha512) are accepted, with their exact lowercase-hex lengths.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from ocicore.errors import InvalidDigestError

_GRAMMAR = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[a-f0-9]+$")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated content digest, e.g. ``sha256:<64 lowercase hex>``."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        _check(self.algorithm, self.hex, f"{self.algorithm}:{self.hex}")

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse ``value``; raises ``InvalidDigestError`` naming the rule it breaks."""
        if not isinstance(value, str):
            raise InvalidDigestError(f"digest must be a string, not {type(value).__name__}")
        match = _GRAMMAR.match(value)
        if match is None:
            raise InvalidDigestError(
                f"invalid digest {_show(value)}: expected '<algorithm>:<hex>'",
                hint="a digest looks like sha256: followed by 64 lowercase hex characters",
            )
        return cls(match.group(1), match.group(2))

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data``."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Any:
        """A fresh ``hashlib`` object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def matches(self, data: bytes) -> bool:
        """Whether ``data`` hashes to this digest."""
        return hashlib.new(self.algorithm, data).hexdigest() == self.hex

    @property
    def tag_form(self) -> str:
        """The cosign/referrers tag-schema form, ``sha256-<hex>``."""
        return f"{self.algorithm}-{self.hex}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> Digest:
            if isinstance(value, Digest):
                return value
            try:
                return cls.parse(value)
            except InvalidDigestError as exc:
                raise ValueError(exc.message) from None

        return core_schema.no_info_plain_validator_function(
            validate,
            json_schema_input_schema=core_schema.str_schema(pattern=r"^sha256:[a-f0-9]{64}$"),
            serialization=core_schema.to_string_ser_schema(),
        )


def _check(algorithm: str, hex_part: str, whole: str) -> None:
    if algorithm not in _HEX_LENGTH:
        raise InvalidDigestError(
            f"invalid digest {_show(whole)}: unsupported algorithm {algorithm!r}",
            hint="use sha256 (or sha512)",
        )
    want = _HEX_LENGTH[algorithm]
    if len(hex_part) != want or not _HEX.match(hex_part):
        raise InvalidDigestError(
            f"invalid digest {_show(whole)}: {algorithm} needs exactly {want} lowercase hex "
            f"characters, got {len(hex_part)}",
            hint="copy the whole digest, e.g. from 'appliance-release resolve' or 'crane digest'",
        )


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")
