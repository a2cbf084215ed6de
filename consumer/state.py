"""The appliance's local record of what it installed, per channel (anti-rollback).

The file is JSON, written atomically (temporary file in the same directory, fsync,
``os.replace``, fsync of the directory), so a crash leaves either the old or the new
state, never a mix. A file that exists but cannot be read is an error, never a
silent reset: resetting would re-open the door to rollbacks.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import semver
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ocicore.digest import Digest
from ocicore.errors import InvalidInputError, ToolkitError
from ocicore.fsutil import write_atomic
from ocicore.jsonutil import canonical_json, load_json_strict

STATE_SCHEMA = "alga.appliance.state/v1"
_MAX_STATE_BYTES = 1024 * 1024


class StateFileError(InvalidInputError):
    """The state file exists but is unreadable or invalid."""


class RollbackError(ToolkitError):
    """The channel offers an older release than the one installed."""

    exit_code = 6


class InstalledRelease(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    sequence: int | None = None
    digest: Digest
    installed_at: datetime = Field(alias="installedAt")


class ApplianceState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: str = Field(default=STATE_SCHEMA, alias="schema")
    channels: dict[str, InstalledRelease] = Field(default_factory=dict)


def load_state(path: Path) -> ApplianceState:
    """The recorded state; an absent file is the empty state.

    Raises ``StateFileError`` when the file exists but is unreadable, not JSON, or
    not a state document.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ApplianceState()
    except OSError as exc:
        raise StateFileError(f"cannot read the state file {path}: {exc.strerror}") from None
    hint = (f"the file is damaged; restore it from backup, or move it away deliberately "
            f"(anti-rollback protection starts over): mv {path} {path}.broken")
    try:
        doc = load_json_strict(data, what=f"state file {path}", max_bytes=_MAX_STATE_BYTES)
        state = ApplianceState.model_validate(doc)
    except ToolkitError as exc:
        raise StateFileError(exc.message, hint=hint) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise StateFileError(f"state file {path}: {loc}: {err['msg']}", hint=hint) from None
    if state.schema_ != STATE_SCHEMA:
        raise StateFileError(f"state file {path} has schema {state.schema_!r}, expected "
                             f"{STATE_SCHEMA!r}", hint=hint)
    return state


def save_state(path: Path, state: ApplianceState) -> None:
    """Write ``state`` atomically (and durably) to ``path``."""
    write_atomic(path, canonical_json(state.model_dump(mode="json", by_alias=True)) + b"\n")


def record_install(
    state: ApplianceState, channel: str, release: InstalledRelease
) -> ApplianceState:
    """A new state with ``release`` as the channel's installed release."""
    return state.model_copy(update={"channels": {**state.channels, channel: release}})


def check_rollback(
    state: ApplianceState, channel: str, version: str, sequence: int | None, digest: Digest,
    *, allow_downgrade: bool = False,
) -> None:
    """Raise ``RollbackError`` when the offered release is older than the installed one.

    Older means either order going backwards: a lower ``sequence`` (published earlier: a
    replayed old release) or a lower SemVer ``version`` (a later-published release of an
    older line would downgrade the application and its data). The same version under
    another digest is refused too (a version is immutable).
    """
    current = state.channels.get(channel)
    if current is None or current.digest == digest or allow_downgrade:
        return
    has_sequences = current.sequence is not None and sequence is not None
    older = has_sequences and sequence < current.sequence  # type: ignore[operator]
    try:
        older = older or semver_lt(version, current.version)
    except RollbackError:
        if not has_sequences:  # nothing to order the two releases by
            raise
    if older:
        raise RollbackError(
            f"channel {channel!r} offers {version} (sequence {sequence}), older than the "
            f"installed {current.version} (sequence {current.sequence})",
            hint="a channel moved back, or someone replays an old release; pass "
            "--allow-downgrade only if the rollback is intended",
        )
    if version == current.version:
        raise RollbackError(
            f"channel {channel!r} offers version {version} with digest {digest}, but "
            f"{version} was installed with digest {current.digest}",
            hint="a published version was changed; report it to the release team",
        )


def semver_lt(a: str, b: str) -> bool:
    try:
        return bool(semver.Version.parse(a.lstrip("v")) < semver.Version.parse(b.lstrip("v")))
    except ValueError:
        raise RollbackError(f"cannot order versions {a!r} and {b!r} (not SemVer) and the "
                            "releases carry no sequence numbers") from None
