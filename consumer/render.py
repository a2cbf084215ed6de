"""Render, apply and diff an ``InstallPlan``.

``render(plan, directory)`` writes one YAML file per object, ``NN-<kind>-<namespace>-<name>.yaml``
(``NN-<kind>-<name>.yaml`` when cluster-scoped; ``NN`` is the apply order), with
deterministic bytes (sorted keys, multi-line strings as ``|`` blocks). It writes into a
temporary directory next to ``directory`` and renames it into place at the end, so
``directory`` is never half-written; Secret files are mode 0600 (they hold the site's
secrets), the others 0644.

``apply(plan, kubectl)`` runs ``kubectl apply --server-side --field-manager
appliance-release -f -`` once, with every object in plan order as one multi-document
YAML on stdin, with the ``Kubectl`` wrapper's kubeconfig and context.

``diff(plan, directory)`` compares the plan with the objects of a directory of YAML
files (a previous ``render``, or anything else), by ``Kind/namespace/name``;
``diff_cluster(plan, kubectl)`` runs ``kubectl diff --server-side`` (exit 1 means
differences, not failure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from consumer.plan import FIELD_MANAGER, InstallPlan, dump_yaml, object_key
from consumer.tools import Kubectl, ToolFailedError, ToolMissingError
from ocicore.errors import InvalidInputError

_APPLY_WHAT = "kubectl apply of the install plan"


class RenderError(InvalidInputError):
    """The output directory cannot be written, or a directory to diff cannot be read."""


def file_name(index: int, doc: Mapping[str, Any], width: int = 2) -> str:
    """``NN-<kind>-<namespace>-<name>.yaml`` for the object at plan position ``index``."""
    meta = doc["metadata"]
    parts = [f"{index:0{width}d}", str(doc["kind"]).lower()]
    if meta.get("namespace"):
        parts.append(meta["namespace"])
    parts.append(meta["name"])
    return "-".join(parts) + ".yaml"


def manifest_stream(plan: InstallPlan) -> bytes:
    """Every object of ``plan`` in order, as one multi-document YAML."""
    return "".join(f"---\n{dump_yaml(doc)}" for doc in plan.to_dicts()).encode()


def render(plan: InstallPlan, directory: Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``plan`` as YAML files into ``directory``; returns the files in plan order.

    ``directory`` must not exist or be empty, unless ``overwrite`` (then its content is
    replaced as a whole). Raises ``RenderError``; on failure ``directory`` is untouched.
    """
    directory = Path(directory)
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise RenderError(f"cannot render into {directory}: it exists and is not a directory",
                          hint="pass a new directory")
    occupied = directory.is_dir() and any(directory.iterdir())
    if occupied and not overwrite:
        raise RenderError(f"cannot render into {directory}: it is not empty",
                          hint="pass an empty or new directory, or ask to overwrite it")
    docs = plan.to_dicts()
    width = max(2, len(str(len(docs) - 1)))
    names = [file_name(i, doc, width) for i, doc in enumerate(docs)]
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-",
                                        dir=directory.parent))
    except OSError as exc:
        raise RenderError(f"cannot create a directory next to {directory}: {exc.strerror}",
                          hint="check that its parent is writable") from None
    try:
        for name, doc in zip(names, docs, strict=True):
            path = staging / name
            path.write_text(dump_yaml(doc), encoding="utf-8")
            path.chmod(0o600 if doc["kind"] == "Secret" else 0o644)
        staging.chmod(0o755)
        _swap_into_place(staging, directory, occupied)
    except OSError as exc:
        raise RenderError(f"cannot write {directory}: {exc.strerror or exc}",
                          hint="check that the directory is writable") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [directory / name for name in names]


def _swap_into_place(staging: Path, directory: Path, occupied: bool) -> None:
    if not occupied:
        if directory.is_dir():
            directory.rmdir()
        os.replace(staging, directory)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
    old.rmdir()
    os.replace(directory, old)
    try:
        os.replace(staging, directory)
    except OSError:
        os.replace(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def apply(plan: InstallPlan, kubectl: Kubectl, *, force_conflicts: bool = False) -> str:
    """``kubectl apply --server-side`` of every object, in plan order; kubectl's output.

    ``force_conflicts`` takes over fields another field manager owns. Raises
    ``ToolMissingError`` and ``ToolFailedError`` (with kubectl's last stderr line).
    """
    args = ["apply", "--server-side", "--field-manager", FIELD_MANAGER]
    if force_conflicts:
        args.append("--force-conflicts")
    return kubectl.cluster([*args, "-f", "-"], what=_APPLY_WHAT, stdin=manifest_stream(plan))


@dataclass(frozen=True)
class ClusterDiff:
    """``kubectl diff`` of the plan against the cluster."""

    differs: bool
    output: str


def diff_cluster(plan: InstallPlan, kubectl: Kubectl) -> ClusterDiff:
    """``kubectl diff --server-side`` of the plan. Exit 0 is no difference, 1 differences;
    anything else raises ``ToolFailedError``."""
    command = [kubectl.binary, *kubectl.global_args, "diff", "--server-side",
               "--field-manager", FIELD_MANAGER, "-f", "-"]
    try:
        proc = subprocess.run(command, input=manifest_stream(plan), capture_output=True,
                              timeout=300, check=False)
    except FileNotFoundError:
        raise ToolMissingError(f"kubectl at {kubectl.binary} does not exist",
                               hint="run ./scripts/setup.sh") from None
    except subprocess.TimeoutExpired:
        raise ToolFailedError("kubectl diff of the install plan did not finish in 300s") from None
    if proc.returncode not in (0, 1):
        stderr = proc.stderr.decode(errors="replace").strip()
        last = next((ln for ln in reversed(stderr.splitlines()) if ln.strip()), "")
        raise ToolFailedError(
            f"kubectl diff of the install plan failed (exit {proc.returncode}): {last}",
            hint="run kubectl diff by hand to see all output", stderr=stderr)
    return ClusterDiff(proc.returncode == 1, proc.stdout.decode(errors="replace"))


@dataclass(frozen=True)
class PlanDiff:
    """What applying the plan would change in a directory of objects, by object key."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)  # key → changed field paths

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        """One line per difference: ``+ key``, ``- key``, ``~ key: path, path``."""
        out = [f"+ {key}" for key in self.added] + [f"- {key}" for key in self.removed]
        out += [f"~ {key}: {', '.join(paths)}" for key, paths in self.changed.items()]
        return out


def diff(plan: InstallPlan, directory: Path) -> PlanDiff:
    """Compare ``plan`` with the objects in ``directory``'s ``*.yaml``/``*.yml`` files.

    Raises ``RenderError`` when the directory is missing or holds invalid YAML, a
    document without ``kind``/``metadata.name``, or the same object twice."""
    theirs = read_objects(Path(directory))
    ours = {object_key(doc): doc for doc in plan.to_dicts()}
    changed = {}
    for key, doc in ours.items():
        if key in theirs and theirs[key] != doc:
            changed[key] = _changed_paths(theirs[key], doc, "")
    return PlanDiff(
        added=[k for k in ours if k not in theirs],
        removed=sorted(k for k in theirs if k not in ours),
        changed=changed,
    )


def read_objects(directory: Path) -> dict[str, dict[str, Any]]:
    """The Kubernetes objects in a directory's YAML files, by object key."""
    if not directory.is_dir():
        raise RenderError(f"{directory} is not a directory", hint="pass a rendered plan")
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RenderError(f"cannot read {path}: {first}") from None
        for doc in docs:
            if doc is None:
                continue
            if not (isinstance(doc, dict) and doc.get("kind")
                    and isinstance(doc.get("metadata"), dict) and doc["metadata"].get("name")):
                raise RenderError(f"{path}: a document is not a Kubernetes object "
                                  "(kind and metadata.name)")
            key = object_key(doc)
            if key in found:
                raise RenderError(f"{path}: {key} appears more than once in {directory}")
            found[key] = doc
    return found


def _changed_paths(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        paths = []
        for key in sorted(set(old) | set(new), key=str):
            child = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                paths.append(child)
            elif old[key] != new[key]:
                paths += _changed_paths(old[key], new[key], child)
        return paths
    return [path or "(whole object)"] if old != new else []
