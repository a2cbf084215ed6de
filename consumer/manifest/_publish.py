"""The strict rules for a release manifest that we publish (DESIGN.md §3).

The reader (the models) is tolerant so that manifests already in the field stay
readable; what we write must additionally be complete and self-consistent, so
that ``verify`` can check every artifact against a lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import yaml

from consumer.manifest._errors import field_path
from consumer.manifest._grammar import PINNED_REFERENCE, TAG, show

if TYPE_CHECKING:
    from consumer.manifest._models import ReleaseManifest


def _tag_problem(path: str, value: str, why: str) -> list[str]:
    if TAG.matches(value):
        return []
    return [f"{path}: must be {TAG.rule} ({why}), not {show(value)}"]


def _keys_match(path: str, what: str, expected: Iterable[str], actual: Iterable[str]) -> list[str]:
    expected, actual = set(expected), set(actual)
    problems = [
        f"{field_path([*path.split('.'), key])}: missing; {what}"
        for key in sorted(expected - actual)
    ]
    problems += [
        f"{field_path([*path.split('.'), key])}: locks nothing; {what}"
        for key in sorted(actual - expected)
    ]
    return problems


def _profile_values_problems(
    manifest: ReleaseManifest, bundle_helmreleases: Iterable[str] | None
) -> list[str]:
    problems: list[str] = []
    files = manifest.profile_values or {}
    profile = manifest.values_profile
    releases_with_values: set[str] = set()
    for name, text in sorted(files.items()):
        path = field_path(["profileValues", name])
        release, file_profile, _ = name.split(".")
        releases_with_values.add(release)
        if file_profile != profile:
            problems.append(
                f"{path}: profile {show(file_profile)} is not the valuesProfile {show(profile)}"
            )
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problems.append(f"{path}: must be valid YAML; it is not{where}")
            continue
        if values is not None and not isinstance(values, dict):
            problems.append(
                f"{path}: must be a YAML mapping (Helm values), not a {type(values).__name__}"
            )
    if bundle_helmreleases is not None:
        releases = set(bundle_helmreleases)
        for release in sorted(releases - releases_with_values):
            problems.append(
                f"{field_path(['profileValues', f'{release}.{profile}.yaml'])}: missing; "
                f"the bundle has a HelmRelease {show(release)} and every HelmRelease needs "
                "its profile values"
            )
        for release in sorted(releases_with_values - releases):
            problems.append(
                f"profileValues: values for {show(release)}, which is not a HelmRelease "
                "of the bundle"
            )
    return problems


def _lock_problems(manifest: ReleaseManifest) -> list[str]:
    locks = manifest.locks
    if locks is None:
        return ["locks: field required for publishing"]
    problems: list[str] = []

    image_keys = manifest.images.by_key()
    if locks.images is None:
        problems.append("locks.images: field required for publishing")
    else:
        problems += _keys_match(
            "locks.images",
            "every entry of images needs a lock, and only those",
            image_keys,
            locks.images,
        )

    charts = manifest.charts or {}
    if locks.charts is None:
        problems.append("locks.charts: field required for publishing")
    else:
        problems += _keys_match(
            "locks.charts",
            "every entry of charts needs a lock, and only those",
            charts,
            locks.charts,
        )
        for name, lock in sorted(locks.charts.items()):
            if name not in charts:
                continue
            repository, _, tag = lock.ref.removeprefix("oci://").rpartition(":")
            path = field_path(["locks", "charts", name, "ref"])
            expected_tag = charts[name].replace("+", "_")
            if repository.rpartition("/")[2] != name:
                problems.append(
                    f"{path}: must be a repository ending in /{name}, not {show(lock.ref)}"
                )
            if tag != expected_tag:
                problems.append(
                    f"{path}: must have the tag {show(expected_tag)} (charts.{name} = "
                    f"{show(charts[name])}, '+' written '_'), not {show(tag)}"
                )

    if locks.control_plane is None:
        problems.append("locks.controlPlane: field required for publishing")
    elif manifest.control_plane_digest not in (None, locks.control_plane):
        problems.append(
            f"locks.controlPlane: must equal the digest in controlPlane "
            f"({manifest.control_plane_digest}), not {locks.control_plane}"
        )

    if locks.config is None:
        problems.append("locks.config: field required for publishing")
    elif locks.config != manifest.config.digest:
        problems.append(
            f"locks.config: must equal config.digest ({manifest.config.digest}), not {locks.config}"
        )
    return problems


def publish_problems(
    manifest: ReleaseManifest, bundle_helmreleases: Iterable[str] | None = None
) -> list[str]:
    """Every way ``manifest`` falls short of the publishing rules, as ``path: rule`` lines."""
    problems: list[str] = []
    problems += _tag_problem(
        "version", manifest.version, "the release manifest is pushed with it as its tag"
    )
    config = manifest.config
    if config.tag is not None:
        problems += _tag_problem("config.tag", config.tag, "the bundle is pushed with it")
    if config.version != config.tag:
        problems.append(
            f"config.version: must equal config.tag ({show(config.tag)}) for older readers, "
            f"not {show(config.version)}"
        )
    if manifest.control_plane is None:
        problems.append("controlPlane: field required for publishing")
    elif not PINNED_REFERENCE.matches(manifest.control_plane):
        problems.append(
            f"controlPlane: must be {PINNED_REFERENCE.rule} for publishing, "
            f"not {show(manifest.control_plane)}"
        )
    if manifest.created is None:
        problems.append("created: field required for publishing")
    if manifest.sequence is None:
        problems.append("sequence: field required for publishing")
    if not manifest.charts:
        problems.append("charts: must name at least one chart for publishing")
    problems += _profile_values_problems(manifest, bundle_helmreleases)
    problems += _lock_problems(manifest)
    return problems
