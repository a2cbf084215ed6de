"""``audit``: the state of a registry namespace, as one report.

For the release repository ``<ns>/<appliance>-release`` of one registry: every version
and channel tag; for each release manifest a verdict (schema valid, signed by a
trusted key, every lock present with the recorded digest and a whole closure, charts
and bundle readable); each channel's target, binding and promotion history; the
artifacts of the namespace that no release references (clean-up candidates: listed,
never deleted). Nothing is written to the registry.

Findings and the deduplication rule. Each defect is reported exactly once, as one
``Finding`` (``kind``, ``subject``, ``message``, ``affects``):

- an **artifact defect** (``tag-moved``: an artifact's version tag resolves to another
  digest than the lock, i.e. an immutability violation; ``missing-tag``;
  ``missing-manifest``; ``missing-blob``; ``unreadable``) is reported once on the
  artifact (``host/repo:tag`` or ``host/repo@digest``), however many releases lock it;
  ``affects`` names those releases and the channels serving them;
- a **release defect** (``not-a-release``, ``invalid-manifest``, ``unsigned``) is
  reported once per manifest digest, on the channel that serves it when one does
  (that is where an appliance meets it) and else on its version tag; ``affects``
  names every tag holding the digest. ``version-mismatch`` (tag ``X`` holds release
  ``Y``) is reported on the tag;
- a **binding defect** (``not-bound``: trusted signatures exist, none for this
  channel; ``binding-expired``: every binding for this channel has expired, so an
  appliance would refuse the channel, as ``consumer.signatures.verify_binding`` does) is
  reported on the channel, and only when the release has no release defect (an
  unsigned release is one ``unsigned`` finding, not also ``not-bound``);
- a version or channel tag whose manifest cannot be read at all (oversized, corrupted)
  is one ``unreadable`` finding on the tag;
- ``history-mismatch`` (the channel is not where its last promotion record put it, or
  has no record) is reported only on a channel that no other finding has as subject
  (a channel carries at most one finding of its own).

A channel serving a release with artifact defects gets no finding of its own (its
status is ``incomplete`` and the artifact finding lists it). Unreferenced artifacts
are not findings; a moved tag already reported as ``tag-moved`` is not listed again.
Signature tags (``sha256-<hex>.sig`` and other ``sha256-<hex>[.x]`` tags), promotion
records and channel tags are never clean-up candidates.

Scale: work runs on a ``ThreadPoolExecutor`` of ``concurrency`` threads, stage by stage
(tags → manifests → locks → history → unreferenced), and each manifest, tag, closure
and blob is looked at once however many releases share it. Tag listing and the
catalog follow ``Link`` pagination (``RegistryClient``). The report counts the
requests made (``client.stats.requests``). Releases are audited on this registry
only; locks on other registries are listed as not checked.
"""

from __future__ import annotations

import concurrent.futures
import re
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import semver

from consumer.manifest import ReleaseManifest, read_manifest
from consumer.resolve import ResolvedRelease, is_release_artifact
from consumer.signatures import (
    MAX_PAYLOAD_BYTES,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    BindingClaims,
    ChannelBinding,
    SignedPayload,
    TrustStore,
    verify_binding,
)
from consumer.verify import PinnedArtifact, pinned_artifacts
from ocicore.client import FetchedManifest, RegistryClient
from ocicore.digest import Digest
from ocicore.errors import (
    AuthenticationError,
    AuthorizationError,
    IntegrityError,
    NotFoundError,
    ToolkitError,
    UnsupportedError,
)
from ocicore.jsonutil import load_json_strict
from ocicore.models import Index, Manifest
from publisher.bundle import FLUX_CONFIG_MEDIA_TYPE, FLUX_CONTENT_MEDIA_TYPE
from publisher.charts import HELM_CHART_MEDIA_TYPE, HELM_CONFIG_MEDIA_TYPE
from publisher.promote import PromotionRecord
from publisher.release_config import ReleaseConfig

__all__ = [
    "AuditFailedError",
    "AuditReport",
    "ChannelStatus",
    "Finding",
    "ReleaseVerdict",
    "UnreferencedArtifact",
    "audit",
]

_SIGNATURE_TAG = re.compile(r"^sha256-[0-9a-f]{64}(\.[A-Za-z0-9_-]+)?$")
_RECORD_TAG = re.compile(r"^promotion-(?P<channel>.+)-(?P<n>[0-9]{6})$")
#: Charts and bundles are small; a content layer over this is not "readable" here.
MAX_CONTENT_BYTES = 64 * 1024 * 1024
_VERIFIED_ANY_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_T = TypeVar("_T")
_K = TypeVar("_K")


class AuditFailedError(IntegrityError):
    """The audit found problems (exit 4); the message is the one-line summary."""


# -- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One defect, reported once (see the module docstring for the rule)."""

    kind: str
    subject: str
    message: str
    #: Release versions and ``channel:<name>`` entries this defect touches.
    affects: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "message": self.message,
                "affects": list(self.affects)}


@dataclass(frozen=True)
class ReleaseVerdict:
    """What the audit found for one manifest held by a version or channel tag."""

    digest: str
    tags: tuple[str, ...]
    version: str | None
    sequence: int | None
    is_release: bool
    schema_valid: bool
    signed_by: str | None
    locks_ok: bool
    readable: bool
    problems: tuple[str, ...]
    unchecked: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "tags": list(self.tags), "version": self.version,
                "sequence": self.sequence, "isRelease": self.is_release,
                "schemaValid": self.schema_valid, "signedBy": self.signed_by,
                "locksOk": self.locks_ok, "readable": self.readable, "ok": self.ok,
                "problems": list(self.problems), "unchecked": list(self.unchecked)}


@dataclass(frozen=True)
class ChannelStatus:
    """A channel: where it points, whether an appliance would accept it, its history.

    ``status``: ``ok``, ``absent`` (no tag), ``unreadable``, ``not-a-release``,
    ``invalid-manifest``, ``unsigned``, ``not-bound``, ``binding-expired`` or
    ``incomplete``.
    """

    channel: str
    digest: str | None
    version: str | None
    status: str
    expires: str | None
    history: tuple[PromotionRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "digest": self.digest, "version": self.version,
                "status": self.status, "expires": self.expires,
                "history": [r.__dict__ for r in self.history]}


@dataclass(frozen=True)
class UnreferencedArtifact:
    """A tag of the namespace whose manifest no release (or signature, record) references."""

    repository: str
    tag: str
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, "tag": self.tag, "digest": self.digest}


@dataclass
class AuditReport:
    registry: str
    namespace: str
    repository: str
    audited_at: str
    releases: list[ReleaseVerdict] = field(default_factory=list)
    channels: list[ChannelStatus] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    unreferenced: list[UnreferencedArtifact] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def requests_per_release(self) -> float:
        return self.requests / max(1, len(self.releases))

    def summary(self) -> str:
        """One line: the verdict and the counts."""
        kinds: dict[str, int] = {}
        for finding in self.findings:
            kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        head = "audit passed" if self.ok else \
            f"audit failed: {_count(len(self.findings), 'finding')} ({what})"
        releases = sum(1 for r in self.releases if r.is_release)
        return (f"{head}; {_count(releases, 'release')}, {_count(len(self.channels), 'channel')}"
                f", {_count(len(self.unreferenced), 'unreferenced artifact')} in "
                f"{self.registry}/{self.namespace}")

    def to_json(self) -> dict[str, Any]:
        return {
            "registry": self.registry, "namespace": self.namespace,
            "repository": self.repository, "auditedAt": self.audited_at, "ok": self.ok,
            "summary": self.summary(),
            "releases": [r.to_json() for r in self.releases],
            "channels": [c.to_json() for c in self.channels],
            "findings": [f.to_json() for f in self.findings],
            "unreferenced": [u.to_json() for u in self.unreferenced],
            "notes": self.notes,
            "requests": self.requests,
            "requestsPerRelease": round(self.requests_per_release, 2),
            "seconds": round(self.seconds, 3),
        }

    def text_lines(self) -> list[str]:
        lines = [f"audit of {self.registry}/{self.namespace} (release repository "
                 f"{self.repository}) at {self.audited_at}", "", "releases:"]
        for r in self.releases:
            state = "ok" if r.ok else "; ".join(r.problems)
            lines.append(f"  {r.version or '?':<12} {r.digest}  {','.join(r.tags)}  {state}")
        lines += ["", "channels:"]
        for c in self.channels:
            target = f"{c.version or '?'} {c.digest}" if c.digest else "(no tag)"
            verb = "expired" if c.status == "binding-expired" else "expires"
            expiry = f", binding {verb} {c.expires}" if c.expires else ""
            lines.append(f"  {c.channel:<10} -> {target}  {c.status}{expiry}")
            for rec in c.history:
                lines.append(f"      #{rec.n} {rec.at}  {rec.from_version or '(none)'} -> "
                             f"{rec.to_version}  by {rec.by}")
        lines += ["", f"findings ({len(self.findings)}):"]
        lines += [f"  [{f.kind}] {f.subject}: {f.message}" for f in self.findings] or ["  none"]
        lines += ["", f"unreferenced artifacts ({len(self.unreferenced)}; listed, not deleted):"]
        lines += [f"  {u.repository}:{u.tag}  {u.digest}" for u in self.unreferenced] or \
            ["  none"]
        lines += [f"note: {n}" for n in self.notes]
        lines += ["", f"{self.requests} requests ({self.requests_per_release:.1f} per release) "
                  f"in {self.seconds:.2f} s", self.summary()]
        return lines


# -- internal records ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Lock:
    """One artifact a release pins, on this registry."""

    artifact: str
    repository: str
    tag: str | None
    digest: Digest
    tag_required: bool


@dataclass
class _Release:
    """What stage 2 learned about one manifest digest."""

    digest: Digest
    defect: tuple[str, str] | None = None  # (kind, message) of a release defect
    manifest: ReleaseManifest | None = None
    claims: list[tuple[str, BindingClaims]] = field(default_factory=list)
    locks: list[_Lock] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Defect:
    kind: str
    key: tuple[str, ...]
    subject: str
    message: str


class _BlobMemo:
    """``HEAD`` each (repository, blob) once, from any thread."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client
        self._known: dict[tuple[str, Digest], bool] = {}
        self._lock = threading.Lock()

    def exists(self, repository: str, digest: Digest) -> bool:
        key = (repository, digest)
        with self._lock:
            if key in self._known:
                return self._known[key]
        present = self._client.blob_exists(repository, digest)
        with self._lock:
            self._known[key] = present
        return present


# -- the audit ---------------------------------------------------------------------------


def audit(
    client: RegistryClient,
    config: ReleaseConfig,
    trust: TrustStore,
    *,
    concurrency: int = 8,
    now: datetime | None = None,
) -> AuditReport:
    """Audit ``config``'s namespace on ``client``'s registry; returns the report (it never
    raises for what it finds). Raises registry errors that stop the audit as a whole
    (the release repository cannot be listed, authentication fails)."""
    return _Auditor(client, config, trust, concurrency, now or datetime.now(UTC)).run()


class _Auditor:
    def __init__(self, client: RegistryClient, config: ReleaseConfig, trust: TrustStore,
                 concurrency: int, now: datetime) -> None:
        self.client = client
        self.config = config
        self.trust = trust
        self.now = now
        self.concurrency = max(1, concurrency)
        self.repo = config.release_repository
        self.host = client.registry
        self.blobs = _BlobMemo(client)
        self.listed: dict[str, list[str]] = {}
        self._listed: dict[str, set[str]] = {}
        self.unreadable_tags: dict[str, str] = {}
        self._lock = threading.Lock()

    def map(self, func: Callable[[_K], _T], items: Iterable[_K]) -> dict[_K, _T]:
        keys = list(dict.fromkeys(items))
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=min(self.concurrency, max(1, len(keys))),
                thread_name_prefix="audit") as pool:
            return dict(zip(keys, pool.map(func, keys), strict=True))

    def run(self) -> AuditReport:
        started, requests = time.monotonic(), self.client.stats.requests
        report = AuditReport(self.host, self.config.registry.namespace, self.repo,
                             self.now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        # 1. the release repository's tags, classified
        tags = self.client.list_tags(self.repo, missing_ok=True)
        records_by_channel: dict[str, list[str]] = {}
        for tag in tags:
            if m := _RECORD_TAG.match(tag):
                records_by_channel.setdefault(m.group("channel"), []).append(tag)
        channels = sorted(set(self.config.appliance.channels) | set(records_by_channel))
        versions = [t for t in tags if t not in channels and _is_semver(t)]
        others = [t for t in tags if t not in channels and not _is_semver(t)
                  and not _SIGNATURE_TAG.match(t) and not _RECORD_TAG.match(t)]
        present = set(tags)
        # the namespace's other repositories: which tags exist (no HEAD for absent ones)
        self.listed, catalog = self._list_namespace()
        self._listed = {r: set(ts) for r, ts in self.listed.items()}
        held = self.map(self._fetch_tag, [*versions, *(c for c in channels if c in present)])
        by_digest: dict[Digest, list[str]] = {}
        for tag, fetched in held.items():
            if fetched is not None:
                by_digest.setdefault(fetched.digest, []).append(tag)
        # 2. each distinct manifest: release? schema? signatures? locks?
        manifests = {f.digest: f for f in held.values() if f is not None}
        releases = self.map(lambda d: self._release(manifests[d]), by_digest)
        # 3. every lock: tag → digest, closure, readable (each once)
        locks = {lock for r in releases.values() for lock in r.locks}
        tag_of = self.map(self._resolve_tag, [(lock.repository, lock.tag) for lock in locks
                                              if lock.tag is not None])
        closures = self.map(self._closure, {(lock.repository, lock.digest) for lock in locks})
        readable = self.map(self._readable, [
            (lock.repository, lock.digest, lock.artifact) for lock in locks
            if _needs_reading(lock.artifact) and not closures[(lock.repository, lock.digest)]])
        # 4. channel histories
        record_tags = [t for ts in records_by_channel.values() for t in ts]
        records = self.map(self._record, record_tags)
        # 5. findings, verdicts, channel states
        defects_of: dict[Digest, list[_Defect]] = {}
        for digest, release in releases.items():
            found: list[_Defect] = []
            for lock in release.locks:
                found += self._lock_defects(lock, tag_of, closures, readable)
            defects_of[digest] = found
        channel_target = {c: f.digest for c in channels if (f := held.get(c)) is not None}
        history = {c: tuple(sorted((r for t in records_by_channel.get(c, [])
                                    if (r := records[t]) is not None), key=lambda r: r.n))
                   for c in channels}
        report.findings = self._findings(by_digest, releases, defects_of, channel_target,
                                         history)
        report.releases = [self._verdict(by_digest[d], releases[d], defects_of[d], readable)
                           for d in sorted(by_digest, key=lambda d: _tag_order(by_digest[d]))]
        report.channels = [self._channel_status(c, channel_target.get(c), releases,
                                                defects_of, history[c]) for c in channels]
        # 6. what no release references
        moved = {(f.subject, f.kind) for f in report.findings}
        report.unreferenced = self._unreferenced(report, others, releases, tag_of, moved,
                                                 catalog)
        report.requests = self.client.stats.requests - requests
        report.seconds = time.monotonic() - started
        return report

    # -- stage work (runs on the pool) ------------------------------------------------

    def _fetch_tag(self, tag: str) -> FetchedManifest | None:
        try:
            return self.client.get_manifest(self.repo, tag)
        except NotFoundError:
            return None  # deleted between the listing and now
        except ToolkitError as exc:  # oversized, corrupted: a defect of the tag, not fatal
            with self._lock:
                self.unreadable_tags[tag] = exc.message
            return None

    def _release(self, fetched: FetchedManifest) -> _Release:
        release = _Release(fetched.digest)
        where = f"{self.host}/{self.repo}@{fetched.digest}"
        try:
            parsed = fetched.parse()
        except ToolkitError as exc:
            release.defect = ("not-a-release", f"{where} is not an OCI manifest: {exc.message}")
            return release
        if not isinstance(parsed, Manifest) or not is_release_artifact(parsed):
            kind = getattr(parsed, "artifact_type", None) or parsed.media_type
            release.defect = ("not-a-release", f"{where} is not a release manifest "
                              f"(artifactType {kind!r})")
            return release
        try:
            config = self.client.fetch_blob_bytes(self.repo, parsed.config)
            manifest = read_manifest(config, what=f"release manifest {where}")
        except ToolkitError as exc:
            release.defect = ("invalid-manifest", exc.message)
            return release
        release.manifest = manifest
        release.claims = self._claims(fetched.digest)
        if not release.claims:
            release.defect = ("unsigned", f"release {manifest.version} ({fetched.digest}) has "
                              f"no signature by a trusted key ({', '.join(self.trust.keyids)})")
        resolved = ResolvedRelease(self.host, self.repo, str(fetched.digest), None,
                                   fetched.digest, manifest, config,
                                   ChannelBinding(fetched.digest, "", BindingClaims()))
        try:
            pinned = pinned_artifacts(resolved)
        except ToolkitError as exc:
            release.defect = release.defect or ("invalid-manifest", exc.message)
            return release
        release.locks, release.unchecked = self._locks(pinned, manifest)
        return release

    def _claims(self, digest: Digest) -> list[tuple[str, BindingClaims]]:
        """(keyid, claims) of every signature on ``digest`` by a trusted key, expired or not."""
        try:
            parsed = self.client.get_manifest(self.repo, f"{digest.tag_form}.sig").parse()
        except ToolkitError:  # none, or not readable: no trusted signature either way
            return []
        found = []
        for layer in parsed.layers if isinstance(parsed, Manifest) else []:
            signature = (layer.annotations or {}).get(SIGNATURE_ANNOTATION)
            if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE or not signature:
                continue
            try:
                payload = self.client.fetch_blob_bytes(self.repo, layer,
                                                       max_bytes=MAX_PAYLOAD_BYTES)
                binding = verify_binding(self.trust, digest, [SignedPayload(payload, signature)],
                                         channel=None, now=_VERIFIED_ANY_TIME)
            except ToolkitError:  # SignatureError, or a payload that cannot be read
                continue
            found.append((binding.keyid, binding.claims))
        return found

    def _locks(self, pinned: list[PinnedArtifact],
               manifest: ReleaseManifest) -> tuple[list[_Lock], list[str]]:
        locks, unchecked = [], []
        for item in pinned:
            ref = item.reference
            if ref.registry != self.host:
                unchecked.append(f"{item.artifact} {ref} (on another registry)")
                continue
            tag = ref.tag
            # the control-plane image is locked by digest; its version tag, when it
            # exists, must still be the locked image (publish tags it with the version)
            optional = item.artifact == "control-plane image" and tag is None
            locks.append(_Lock(item.artifact, ref.repository,
                               manifest.version if optional else tag, item.expected,
                               tag_required=not optional))
        return locks, unchecked

    def _resolve_tag(self, key: tuple[str, str]) -> Digest | None:
        repository, tag = key
        listed = self._listed.get(repository)
        if listed is not None and tag not in listed:
            return None
        try:
            return self.client.resolve(repository, tag).digest
        except NotFoundError:
            return None

    def _closure(self, key: tuple[str, Digest]) -> list[tuple[str, Digest, Digest, str]]:
        """(kind, missing digest, parent manifest, detail) for everything missing or
        unreadable under a root manifest: ``ocicore.closure.check_closure``'s walk, with
        structured results and each blob ``HEAD`` shared across roots."""
        repository, root = key
        problems: list[tuple[str, Digest, Digest, str]] = []
        seen: set[Digest] = set()
        pending = [(root, root)]
        while pending:
            current, parent = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            try:
                parsed = self.client.get_manifest(repository, current).parse()
            except NotFoundError:
                problems.append(("missing-manifest", current, parent, "missing"))
                continue
            except ToolkitError as exc:
                problems.append(("unreadable", current, parent, exc.message))
                continue
            if isinstance(parsed, Index):
                pending += [(child.digest, current) for child in parsed.manifests]
                continue
            for blob in parsed.blobs():
                if not self.blobs.exists(repository, blob.digest):
                    problems.append(("missing-blob", blob.digest, current, "missing"))
        return problems

    def _readable(self, key: tuple[str, Digest, str]) -> str:
        """"" when the chart or bundle can be read as one, else why not."""
        repository, digest, artifact = key
        chart = artifact.startswith("chart ")
        config_type = HELM_CONFIG_MEDIA_TYPE if chart else FLUX_CONFIG_MEDIA_TYPE
        content_type = HELM_CHART_MEDIA_TYPE if chart else FLUX_CONTENT_MEDIA_TYPE
        try:
            parsed = self.client.get_manifest(repository, digest).parse()
            if not isinstance(parsed, Manifest) or parsed.config.media_type != config_type:
                return f"its config is not {config_type}"
            contents = [d for d in parsed.layers if d.media_type == content_type]
            if len(contents) != 1:
                return f"it has {len(contents)} layers of type {content_type}, not 1"
            meta = load_json_strict(self.client.fetch_blob_bytes(repository, parsed.config),
                                    what=f"config of {artifact}")
            name = artifact.removeprefix("chart ")
            if chart and (not isinstance(meta, dict) or meta.get("name") != name):
                return f"its Chart.yaml does not name the chart {name!r}"
            if contents[0].size > MAX_CONTENT_BYTES:
                return f"its content is {contents[0].size} bytes, over {MAX_CONTENT_BYTES}"
            with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
                path = Path(tmp) / "content"
                self.client.fetch_blob(repository, contents[0], path)
                with tarfile.open(path, mode="r:gz") as tar:
                    names = [m.name for m in tar]
        except (ToolkitError, tarfile.TarError, OSError, EOFError) as exc:
            return str(getattr(exc, "message", exc)).splitlines()[0]
        if chart and f"{name}/Chart.yaml" not in names:
            return f"its archive has no {name}/Chart.yaml"
        if not names:
            return "its archive is empty"
        return ""

    def _record(self, tag: str) -> PromotionRecord | None:
        try:
            parsed = self.client.get_manifest(self.repo, tag).parse()
            if not isinstance(parsed, Manifest) or not parsed.layers:
                return None
            return PromotionRecord.from_json(
                self.client.fetch_blob_bytes(self.repo, parsed.layers[0], max_bytes=64 * 1024))
        except (NotFoundError, ToolkitError):
            return None

    # -- judgement (no I/O) -----------------------------------------------------------

    def _lock_defects(self, lock: _Lock, tag_of: dict[tuple[str, str], Digest | None],
                      closures: dict[tuple[str, Digest], list[tuple[str, Digest, Digest, str]]],
                      readable: dict[tuple[str, Digest, str], str]) -> list[_Defect]:
        found: list[_Defect] = []
        base = f"{self.host}/{lock.repository}"
        if lock.tag is not None:
            at = tag_of[(lock.repository, lock.tag)]
            if at is None and lock.tag_required:
                found.append(_Defect("missing-tag", ("tag", lock.repository, lock.tag),
                                     f"{base}:{lock.tag}",
                                     f"{lock.artifact} {base}:{lock.tag} does not exist "
                                     f"(locked {lock.digest})"))
            elif at is not None and at != lock.digest:
                found.append(_Defect("tag-moved", ("tag", lock.repository, lock.tag),
                                     f"{base}:{lock.tag}",
                                     f"{lock.artifact} {base}:{lock.tag} now resolves to {at}, "
                                     f"but it was locked as {lock.digest} (version tags are "
                                     "immutable)"))
        for kind, missing, parent, detail in closures[(lock.repository, lock.digest)]:
            if kind == "missing-blob":
                message = (f"blob {missing} of {lock.artifact} {base}@{parent} is missing")
            elif kind == "missing-manifest":
                message = f"manifest {base}@{missing} of {lock.artifact} is missing"
            else:
                message = f"manifest {base}@{missing} of {lock.artifact} is unreadable: {detail}"
            found.append(_Defect(kind, ("digest", lock.repository, str(missing)),
                                 f"{base}@{missing}", message))
        why = readable.get((lock.repository, lock.digest, lock.artifact), "")
        if why:
            found.append(_Defect("unreadable", ("digest", lock.repository, str(lock.digest)),
                                 f"{base}@{lock.digest}",
                                 f"{lock.artifact} {base}@{lock.digest} is not readable: {why}"))
        return found

    def _binding(self, release: _Release, channel: str) -> tuple[str, str | None]:
        """(status, expiry) of ``channel``'s binding on a signed release."""
        bound = [c for _, c in release.claims if c.channel == channel]
        if not bound:
            return "not-bound", None
        live = [c for c in bound if c.expires is None or _aware(c.expires) > self.now]
        if live:
            ends = [c.expires for c in live]
            return "ok", None if None in ends else _stamp(max(_aware(e) for e in ends if e))
        return "binding-expired", _stamp(max(_aware(c.expires) for c in bound if c.expires))

    def _findings(self, by_digest: dict[Digest, list[str]], releases: dict[Digest, _Release],
                  defects_of: dict[Digest, list[_Defect]], channel_target: dict[str, Digest],
                  history: dict[str, tuple[PromotionRecord, ...]]) -> list[Finding]:
        serving: dict[Digest, list[str]] = {}
        for channel, digest in sorted(channel_target.items()):
            serving.setdefault(digest, []).append(channel)

        def affected(digest: Digest) -> list[str]:
            release = releases[digest]
            names = [release.manifest.version] if release.manifest else [
                t for t in by_digest[digest] if t not in channel_target]
            return names + [f"channel:{c}" for c in serving.get(digest, [])]

        findings: dict[tuple[str, ...], Finding] = {}

        def add(kind: str, key: tuple[str, ...], subject: str, message: str,
                affects: Iterable[str]) -> None:
            existing = findings.get((kind, *key))
            merged = sorted({*(existing.affects if existing else ()), *affects})
            findings[(kind, *key)] = Finding(kind, subject, existing.message if existing
                                             else message, tuple(merged))

        for digest, release in releases.items():
            tags = by_digest[digest]
            channels = serving.get(digest, [])
            if release.defect is not None:
                kind, message = release.defect
                where = channels[0] if channels else sorted(tags, key=_semver_key)[0]
                if channels:
                    message += f" (served on channel {', '.join(channels)})"
                add(kind, ("release", str(digest)), f"{self.host}/{self.repo}:{where}", message,
                    affected(digest))
            for defect in defects_of[digest]:
                add(defect.kind, defect.key, defect.subject, defect.message, affected(digest))
            if release.manifest is not None:
                for tag in tags:
                    if tag not in channel_target and tag != release.manifest.version:
                        add("version-mismatch", ("tag", tag), f"{self.host}/{self.repo}:{tag}",
                            f"version tag {tag} holds release {release.manifest.version} "
                            f"({digest})", [tag])
            if release.defect is None:
                for channel in channels:
                    status, expiry = self._binding(release, channel)
                    if status == "not-bound":
                        add(status, ("channel", channel), f"{self.host}/{self.repo}:{channel}",
                            f"channel {channel} points at release {_version(release)} "
                            f"({digest}), which no trusted signature binds to {channel}",
                            [_version(release), f"channel:{channel}"])
                    elif status == "binding-expired":
                        add(status, ("channel", channel), f"{self.host}/{self.repo}:{channel}",
                            f"the binding of release {_version(release)} ({digest}) to channel "
                            f"{channel} expired at {expiry}",
                            [_version(release), f"channel:{channel}"])
        for tag, message in sorted(self.unreadable_tags.items()):
            add("unreadable", ("tag", tag), f"{self.host}/{self.repo}:{tag}",
                f"{self.host}/{self.repo}:{tag} cannot be read: {message}",
                [f"channel:{tag}" if tag in history else tag])
        subjects = {f.subject for f in findings.values()}
        for channel, records in history.items():
            subject = f"{self.host}/{self.repo}:{channel}"
            target = channel_target.get(channel)
            if subject in subjects or (target is None and not records):
                continue
            last = records[-1] if records else None
            if target is None:
                message = f"channel {channel} has promotion records but no tag"
            elif last is None:
                message = f"channel {channel} points at {target} but was never promoted"
            elif last.to_digest != str(target):
                message = (f"channel {channel} points at {target}, but its last promotion "
                           f"(#{last.n}, {last.at}) moved it to {last.to_version} "
                           f"({last.to_digest})")
            else:
                continue
            add("history-mismatch", ("channel", channel), subject, message,
                [f"channel:{channel}"])
        return sorted(findings.values(), key=lambda f: (f.kind, f.subject))

    def _verdict(self, tags: list[str], release: _Release, defects: list[_Defect],
                 readable: dict[tuple[str, Digest, str], str]) -> ReleaseVerdict:
        manifest = release.manifest
        problems = [release.defect[1]] if release.defect else []
        problems += [d.message for d in defects]
        unread = [d for d in defects if d.kind == "unreadable"]
        return ReleaseVerdict(
            digest=str(release.digest), tags=tuple(sorted(tags, key=_semver_key)),
            version=manifest.version if manifest else None,
            sequence=manifest.sequence if manifest else None,
            is_release=release.defect is None or release.defect[0] != "not-a-release",
            schema_valid=manifest is not None,
            signed_by=release.claims[0][0] if release.claims else None,
            locks_ok=manifest is not None and not [d for d in defects if d.kind != "unreadable"],
            readable=manifest is not None and not unread,
            problems=tuple(problems), unchecked=tuple(release.unchecked))

    def _channel_status(self, channel: str, target: Digest | None,
                        releases: dict[Digest, _Release], defects_of: dict[Digest, list[_Defect]],
                        history: tuple[PromotionRecord, ...]) -> ChannelStatus:
        if target is None:
            status = "unreadable" if channel in self.unreadable_tags else "absent"
            return ChannelStatus(channel, None, None, status, None, history)
        release = releases[target]
        version = release.manifest.version if release.manifest else None
        expiry = None
        if release.defect is not None:
            status = release.defect[0]
        else:
            status, expiry = self._binding(release, channel)
            if status == "ok" and defects_of[target]:
                status = "incomplete"
        return ChannelStatus(channel, str(target), version, status, expiry, history)

    # -- unreferenced -----------------------------------------------------------------

    def _list_namespace(self) -> tuple[dict[str, list[str]], bool]:
        """The tags of every repository of the namespace but the release repository, and
        whether the catalog could be read."""
        namespace = self.config.registry.namespace
        try:
            repositories = [r for r in self.client.list_repositories()
                            if r.startswith(f"{namespace}/") and r != self.repo]
        except (UnsupportedError, AuthorizationError, AuthenticationError, NotFoundError):
            return {}, False
        return self.map(lambda r: self.client.list_tags(r, missing_ok=True), repositories), True

    def _unreferenced(self, report: AuditReport, others: list[str],
                      releases: dict[Digest, _Release],
                      tag_of: dict[tuple[str, str], Digest | None],
                      reported: set[tuple[str, str]], catalog: bool,
                      ) -> list[UnreferencedArtifact]:
        referenced: set[tuple[str, Digest]] = {(self.repo, d) for d in releases}
        for release in releases.values():
            referenced |= {(lock.repository, lock.digest) for lock in release.locks}
        listing = self.listed
        if not catalog:
            report.notes.append("the registry's catalog is not available: only the "
                                "repositories releases lock were searched for unreferenced "
                                "artifacts")
            listing = self.map(lambda r: self.client.list_tags(r, missing_ok=True),
                               sorted({r for r, _ in referenced} - {self.repo}))
        candidates = [(self.repo, t) for t in others]
        for repository, tags in listing.items():
            candidates += [(repository, t) for t in tags if not _SIGNATURE_TAG.match(t)]
        unknown = [c for c in candidates if c not in tag_of]
        resolved: dict[tuple[str, str], Digest | None] = {
            **tag_of, **self.map(self._resolve_tag, unknown)}
        found = []
        for repository, tag in candidates:
            digest = resolved[(repository, tag)]
            if digest is None or (repository, digest) in referenced:
                continue
            subject = f"{self.host}/{repository}:{tag}"
            if (subject, "tag-moved") in reported:
                continue
            found.append(UnreferencedArtifact(repository, tag, str(digest)))
        return sorted(found, key=lambda u: (u.repository, u.tag))


# -- helpers -----------------------------------------------------------------------------


def _needs_reading(artifact: str) -> bool:
    return artifact.startswith("chart ") or artifact == "config bundle"


def _is_semver(tag: str) -> bool:
    try:
        semver.Version.parse(tag)
    except ValueError:
        return False
    return True


def _semver_key(tag: str) -> tuple[int, Any, str]:
    try:
        return (0, semver.Version.parse(tag), tag)
    except ValueError:
        return (1, None, tag)


def _tag_order(tags: list[str]) -> tuple[int, Any, str]:
    return min(_semver_key(t) for t in tags)


def _version(release: _Release) -> str:
    return release.manifest.version if release.manifest else str(release.digest)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

