"""Verify that every artifact a release pins is in the registry with exactly that digest.

For each lock (charts, config bundle, images, control plane) the artifact's tag, when
the manifest names one, must still resolve to the locked digest (a re-pushed version
is caught here), and the locked manifest's whole closure must be present. Each
failure names the artifact, the expected and the found digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consumer.resolve import ResolvedRelease
from ocicore.client import RegistryClient
from ocicore.closure import check_closure
from ocicore.digest import Digest
from ocicore.errors import IntegrityError, NotFoundError, ToolkitError
from ocicore.reference import Reference

ClientFor = Callable[[str], RegistryClient]


class VerificationError(IntegrityError):
    """One or more artifacts of a release do not match their locks."""

    def __init__(self, failures: list[ArtifactCheck]) -> None:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(f"{first.problem}{more}",
                         hint="the registry does not hold the release as it was published; "
                         "do not install it, and re-publish or re-mirror it")
        self.failures = failures


@dataclass(frozen=True)
class ArtifactCheck:
    """The verdict on one pinned artifact."""

    artifact: str
    reference: str
    expected: Digest
    found: Digest | None
    problem: str

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass(frozen=True)
class PinnedArtifact:
    """An artifact a release pins: a name for messages, where it is, its digest."""

    artifact: str
    reference: Reference
    expected: Digest


def pinned_artifacts(resolved: ResolvedRelease) -> list[PinnedArtifact]:
    """Every artifact the release locks, located on the registry it was resolved from."""
    manifest = resolved.manifest
    locks = manifest.locks
    pinned: list[PinnedArtifact] = []
    config = resolved.locate(manifest.config.repository).with_tag(manifest.config_tag)
    pinned.append(PinnedArtifact("config bundle", config, Digest.parse(manifest.config.digest)))
    if locks is not None:
        for name, chart in sorted((locks.charts or {}).items()):
            ref = resolved.locate(chart.ref)
            pinned.append(PinnedArtifact(f"chart {name}", ref, Digest.parse(chart.digest)))
        tags = manifest.images.by_key()
        for key, pinned_ref in sorted((locks.images or {}).items()):
            ref = resolved.locate(pinned_ref)
            assert ref.digest is not None  # the grammar requires repo@sha256:…
            with_tag = ref.with_tag(tags[key]) if key in tags else ref
            pinned.append(PinnedArtifact(f"image {key}", with_tag, ref.digest))
    if manifest.control_plane is not None and "@" in manifest.control_plane:
        ref = resolved.locate(manifest.control_plane)
        assert ref.digest is not None
        pinned.append(PinnedArtifact("control-plane image", ref, ref.digest))
    return pinned


def check_artifact(client: RegistryClient, item: PinnedArtifact) -> ArtifactCheck:
    """One artifact: tag → digest equality (when tagged) and a whole closure."""
    ref = item.reference
    shown = str(ref.with_tag(ref.tag) if ref.tag else ref)
    found: Digest | None = None
    try:
        if ref.tag is not None:
            found = client.resolve(ref.repository, ref.tag).digest
            if found != item.expected:
                return ArtifactCheck(
                    item.artifact, shown, item.expected, found,
                    f"{item.artifact} {ref.registry}/{ref.repository}:{ref.tag} resolves to "
                    f"{found}, but the release locks {item.expected}",
                )
        report = check_closure(client, ref.repository, item.expected)
        found = item.expected
    except NotFoundError:
        return ArtifactCheck(item.artifact, shown, item.expected, None,
                             f"{item.artifact} {shown} is missing (locked {item.expected})")
    except ToolkitError as exc:
        return ArtifactCheck(item.artifact, shown, item.expected, found,
                             f"{item.artifact} {shown}: {exc.message}")
    if not report.whole:
        return ArtifactCheck(item.artifact, shown, item.expected, found,
                             f"{item.artifact} {shown} is incomplete: {report.problems[0]}")
    return ArtifactCheck(item.artifact, shown, item.expected, found, "")


def verify_release(resolved: ResolvedRelease, client_for: ClientFor) -> list[ArtifactCheck]:
    """Check every pinned artifact; raises ``VerificationError`` naming the failures,
    else returns the checks (for reports)."""
    checks = [check_artifact(client_for(item.reference.registry), item)
              for item in pinned_artifacts(resolved)]
    failures = [c for c in checks if not c.ok]
    if failures:
        raise VerificationError(failures)
    return checks
