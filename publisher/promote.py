"""Channel promotion: the only mutation in the system (DESIGN.md §1, §4).

``promote(version, channel)``:

1. reads the channel's current digest (``--expect-current`` must match it);
2. resolves the release, checks its signature and that its whole closure is in the
   registry with the locked digests (``consumer.verify``);
3. refuses to move the channel to a lower version than it holds (unless
   ``allow_downgrade``);
4. signs the (digest, channel) binding (cosign format, optional expiry);
5. claims the next history slot: an immutable-by-convention promotion record (an
   OCI artifact whose subject is the release) tagged ``promotion-<channel>-<NNNNNN>``;
6. waits ``settle`` seconds and reads the slot back: a concurrent promoter that
   claimed the same slot later overwrote it, and exactly one claim survives; the
   previous slot's record must end where this one starts (a promoter that read the
   history after a rival's claim took the next slot, and loses here);
7. re-reads the channel (it must still be what was read in 1), moves the tag, and
   reads both back, repairing towards the surviving claim.

A registry offers no conditional tag update (no compare-and-swap in the distribution
spec), so the claim-and-settle protocol narrows the race window instead of closing
it: two promoters whose writes land more than ``settle`` apart see each other; the
loser exits with ``RaceLostError`` (exit code 9) naming both digests and the tag
always ends on the surviving claim, so history and tag agree.

``history(channel)`` lists the promotion records (time, from, to, by whom).
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import semver

from consumer.manifest import read_manifest
from consumer.resolve import Resolver, is_release_artifact
from consumer.signatures import TrustStore, build_payload
from consumer.verify import verify_release
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.errors import InvalidInputError, NotFoundError, ToolkitError
from ocicore.fsutil import rfc3339
from ocicore.jsonutil import canonical_json, load_json_strict
from ocicore.models import EMPTY_JSON, OCI_EMPTY_CONFIG, OCI_MANIFEST, Descriptor, Manifest
from ocicore.pool import ClientPool
from publisher.release_config import ReleaseConfig
from publisher.signing import Signer, append_signature

log = logging.getLogger(__name__)

PROMOTION_ARTIFACT_TYPE = "application/vnd.alga.appliance.promotion.v1+json"
_RECORD_TAG = re.compile(r"^promotion-(?P<channel>.+)-(?P<n>[0-9]{6})$")


class PromotionError(ToolkitError):
    """The promotion was refused (not allowed, downgrade, incomplete release)."""

    exit_code = 8


class RaceLostError(ToolkitError):
    """Another promotion moved the channel first."""

    exit_code = 9


@dataclass(frozen=True)
class PromotionRecord:
    n: int
    channel: str
    to_digest: str
    to_version: str
    from_digest: str | None
    from_version: str | None
    by: str
    at: str

    def to_json(self) -> bytes:
        return canonical_json({"n": self.n, "channel": self.channel,
                               "to": {"digest": self.to_digest, "version": self.to_version},
                               "from": {"digest": self.from_digest, "version": self.from_version},
                               "by": self.by, "at": self.at})

    @classmethod
    def from_json(cls, data: bytes) -> PromotionRecord:
        doc: Any = load_json_strict(data, what="promotion record", max_bytes=64 * 1024)
        try:
            return cls(int(doc["n"]), str(doc["channel"]), str(doc["to"]["digest"]),
                       str(doc["to"]["version"]), doc["from"]["digest"],
                       doc["from"]["version"], str(doc["by"]), str(doc["at"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError("a promotion record is malformed") from None


@dataclass(frozen=True)
class PromotionResult:
    channel: str
    version: str
    digest: Digest
    previous: Digest | None
    record: PromotionRecord | None
    #: ``"moved"`` or ``"unchanged"`` (the channel already pointed there).
    outcome: str


def default_actor() -> str:
    """Who promotes: ``APPLIANCE_RELEASE_ACTOR`` (CI sets it), else user@host."""
    actor = os.environ.get("APPLIANCE_RELEASE_ACTOR")
    return actor or f"{getpass.getuser()}@{socket.gethostname()}"


def promote(
    client: RegistryClient,
    config: ReleaseConfig,
    version: str,
    channel: str,
    signer: Signer,
    *,
    client_for: Callable[[str], RegistryClient] | None = None,
    expect_current: Digest | None = None,
    allow_downgrade: bool = False,
    actor: str | None = None,
    now: datetime | None = None,
    settle: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> PromotionResult:
    """Move ``channel`` to release ``version``. Raises ``PromotionError`` (refused),
    ``RaceLostError`` (a concurrent promotion won), ``VerificationError`` (incomplete
    release) and registry errors."""
    if channel not in config.appliance.channels:
        raise PromotionError(f"channel {channel!r} is not one of {config.appliance.channels}",
                             hint="add it to [appliance].channels in release.toml")
    repo = config.release_repository
    moment = now or datetime.now(UTC)
    current = _current(client, repo, channel)
    if expect_current is not None and current != expect_current:
        raise RaceLostError(f"channel {channel!r} is at {current}, not the expected "
                            f"{expect_current}", hint="re-read the channel and retry")
    trust = TrustStore.from_pem(signer.public_pem(), what="the signing key's public key")
    resolver = Resolver(client, repo, trust, state_path=None, clock=lambda: moment)
    target = resolver.resolve_version(version)
    pool = ClientPool(client_for or (lambda host: client), client)
    verify_release(target, pool)
    if current == target.digest:
        return PromotionResult(channel, version, target.digest, current, None, "unchanged")
    previous_version = _check_order(client, repo, channel, current, version,
                                    allow_downgrade=allow_downgrade)
    expires = moment + timedelta(days=config.signing.binding_days) \
        if config.signing.binding_days else None
    payload = build_payload(f"{client.registry}/{repo}", target.digest, channel=channel,
                            sequence=target.manifest.sequence, version=version,
                            created=moment, expires=expires)
    append_signature(client, repo, target.digest, payload, signer.sign(payload))
    records = history(client, config, channel)
    record = PromotionRecord(
        n=(records[-1].n if records else 0) + 1, channel=channel,
        to_digest=str(target.digest), to_version=version,
        from_digest=str(current) if current else None, from_version=previous_version,
        by=actor or default_actor(), at=rfc3339(moment),
    )
    claim_tag = f"promotion-{channel}-{record.n:06d}"
    if _tag_exists(client, repo, claim_tag):  # a rival claimed the slot since we read
        raise _lost(client, repo, channel, target.digest)
    claim = _push_record(client, repo, record, target.digest, client.resolve(repo, target.digest))
    sleep(settle)
    survivor = client.resolve(repo, claim_tag).digest
    if survivor != claim:
        raise _lost(client, repo, channel, target.digest)
    if (record.n > 1 and not _chains(client, repo, channel, record)) or _current(
            client, repo, channel) != current:
        # a rival claimed an earlier slot or moved the channel: our claim must not stay
        # in the history
        _withdraw(client, repo, claim)
        raise _lost(client, repo, channel, target.digest)
    client.tag_manifest(repo, target.digest, channel)
    sleep(settle)
    survivor = client.resolve(repo, claim_tag).digest
    if survivor != claim:
        # a later claim of the same slot survived: the tag must follow it
        winner = _record_at(client, repo, survivor)
        client.tag_manifest(repo, Digest.parse(winner.to_digest), channel)
        raise _lost(client, repo, channel, target.digest)
    if _current(client, repo, channel) != target.digest:
        client.tag_manifest(repo, target.digest, channel)
    return PromotionResult(channel, version, target.digest, current, record, "moved")


def _push_record(client: RegistryClient, repo: str, record: PromotionRecord, digest: Digest,
                 subject: Descriptor) -> Digest:
    body = record.to_json()
    nonce = uuid.uuid4().hex  # two claims of one slot never share a digest
    client.push_blob(repo, body)
    client.push_blob(repo, EMPTY_JSON)
    manifest = Manifest(
        schema_version=2, media_type=OCI_MANIFEST, artifact_type=PROMOTION_ARTIFACT_TYPE,
        config=Descriptor.of(OCI_EMPTY_CONFIG, EMPTY_JSON),
        layers=[Descriptor.of(PROMOTION_ARTIFACT_TYPE, body)],
        subject=subject,
        annotations={"io.alga.appliance.promotion.nonce": nonce,
                     "io.alga.appliance.promotion.channel": record.channel},
    )
    return client.push_manifest(repo, manifest.to_json(), OCI_MANIFEST,
                                tag=f"promotion-{record.channel}-{record.n:06d}")


def _tag_exists(client: RegistryClient, repo: str, tag: str) -> bool:
    try:
        client.resolve(repo, tag)
    except NotFoundError:
        return False
    return True


def _withdraw(client: RegistryClient, repo: str, claim: Digest) -> None:
    """Delete a losing claim (best effort: where the registry forbids deletes it stays,
    and ``history`` shows a record the channel never reached)."""
    try:
        client.delete_manifest(repo, claim)
    except ToolkitError as exc:
        log.warning("could not withdraw promotion claim %s: %s", claim, exc)


def _chains(client: RegistryClient, repo: str, channel: str, record: PromotionRecord) -> bool:
    """Whether the record of the previous slot ends where ``record`` starts."""
    previous_tag = f"promotion-{channel}-{record.n - 1:06d}"
    previous = _record_at(client, repo, client.resolve(repo, previous_tag).digest)
    return previous.to_digest == record.from_digest


def _record_at(client: RegistryClient, repo: str, digest: Digest) -> PromotionRecord:
    parsed = client.get_manifest(repo, digest).parse()
    if not isinstance(parsed, Manifest) or not parsed.layers:
        raise InvalidInputError(f"{repo}@{digest} is not a promotion record")
    return PromotionRecord.from_json(client.fetch_blob_bytes(repo, parsed.layers[0]))


def _lost(client: RegistryClient, repo: str, channel: str, mine: Digest) -> RaceLostError:
    now_at = _current(client, repo, channel)
    return RaceLostError(
        f"another promotion moved channel {channel!r} first: it points at {now_at}, "
        f"this promotion wanted {mine}",
        hint="check 'appliance-release history' and promote again if still wanted",
    )


def _current(client: RegistryClient, repo: str, channel: str) -> Digest | None:
    try:
        return client.resolve(repo, channel).digest
    except NotFoundError:
        return None


def _check_order(client: RegistryClient, repo: str, channel: str, current: Digest | None,
                 version: str, *, allow_downgrade: bool) -> str | None:
    if current is None:
        return None
    parsed = client.get_manifest(repo, current).parse()
    if not isinstance(parsed, Manifest) or not is_release_artifact(parsed):
        return None  # the channel holds something else; moving it to a release repairs it
    previous = read_manifest(client.fetch_blob_bytes(repo, parsed.config)).version
    try:
        lower = semver.Version.parse(version) < semver.Version.parse(previous)
    except ValueError:
        lower = False
    if lower and not allow_downgrade:
        raise PromotionError(
            f"channel {channel!r} is at {previous}; moving it to {version} is a downgrade",
            hint="pass --allow-downgrade if the rollback is intended",
        )
    return previous


def history(client: RegistryClient, config: ReleaseConfig, channel: str) -> list[PromotionRecord]:
    """The promotions of ``channel``, oldest first."""
    repo = config.release_repository
    tags = sorted(t for t in client.list_tags(repo, missing_ok=True)
                  if (m := _RECORD_TAG.match(t)) and m.group("channel") == channel)
    records = []
    for tag in tags:
        fetched = client.get_manifest(repo, tag)
        records.append(_record_at(client, repo, fetched.digest))
    return records
