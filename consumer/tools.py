"""Small subprocess wrappers around the helm and kubectl binaries.

Lookup: an explicit path, else ``APPLIANCE_RELEASE_HELM`` / ``APPLIANCE_RELEASE_KUBECTL``,
else the repository's provisioned ``.tools/bin``, else ``PATH``. A missing binary is a
``ToolMissingError`` naming the setup command; a failing one a ``ToolFailedError``
carrying the tool's last stderr line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ocicore.errors import ToolkitError

_REPO_TOOLS = Path(__file__).resolve().parent.parent / ".tools" / "bin"
_TIMEOUT_S = 300


class ToolMissingError(ToolkitError):
    """A required external tool is not installed."""

    exit_code = 2


class ToolFailedError(ToolkitError):
    """An external tool ran and failed."""

    def __init__(self, message: str, *, hint: str = "", stderr: str = "") -> None:
        super().__init__(message, hint=hint)
        self.stderr = stderr


def find_tool(name: str, explicit: str | None = None) -> str:
    """The path of ``name`` per the module's lookup order; raises ``ToolMissingError``."""
    candidates = [explicit, os.environ.get(f"APPLIANCE_RELEASE_{name.upper()}"),
                  str(_REPO_TOOLS / name) if (_REPO_TOOLS / name).is_file() else None,
                  shutil.which(name)]
    for candidate in candidates:
        if candidate:
            return candidate
    raise ToolMissingError(f"{name} is not installed",
                           hint="run ./scripts/setup.sh (or make test), or put it on PATH")


class _Tool:
    name = ""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = find_tool(self.name, binary)

    def run(self, args: Sequence[str], *, what: str, stdin: bytes | None = None,
            cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        """Run the tool; its stdout, or ``ToolFailedError`` with the stderr's last line."""
        try:
            proc = subprocess.run(
                [self.binary, *args], input=stdin, capture_output=True, timeout=_TIMEOUT_S,
                cwd=cwd, env={**os.environ, **(env or {})}, check=False,
            )
        except FileNotFoundError:
            raise ToolMissingError(f"{self.name} at {self.binary} does not exist",
                                   hint="run ./scripts/setup.sh") from None
        except subprocess.TimeoutExpired:
            raise ToolFailedError(f"{what}: {self.name} did not finish in {_TIMEOUT_S}s") from None
        stderr = proc.stderr.decode(errors="replace").strip()
        if proc.returncode != 0:
            last = next((ln for ln in reversed(stderr.splitlines()) if ln.strip()), "")
            raise ToolFailedError(f"{what}: {self.name} failed (exit {proc.returncode}): {last}",
                                  hint=f"run the {self.name} command by hand to see all output",
                                  stderr=stderr)
        return proc.stdout.decode()


class Helm(_Tool):
    """``helm lint``, ``template``, ``show chart``, ``pull`` and ``version``."""

    name = "helm"

    def version(self) -> str:
        return self.run(["version", "--short"], what="helm version").strip()

    def lint(self, chart: Path, values: Sequence[Path] = ()) -> str:
        args = ["lint", "--strict", str(chart)]
        for v in values:
            args += ["--values", str(v)]
        return self.run(args, what=f"helm lint of {chart.name}")

    def template(self, chart: Path | str, release: str, namespace: str,
                 values: Sequence[Path] = (), extra: Sequence[str] = ()) -> str:
        args = ["template", release, str(chart), "--namespace", namespace, *extra]
        for v in values:
            args += ["--values", str(v)]
        return self.run(args, what=f"helm template of {release}")


class Kubectl(_Tool):
    """``kubectl kustomize`` and ``apply``/``diff`` with a kubeconfig and context."""

    name = "kubectl"

    def __init__(self, binary: str | None = None, *, kubeconfig: Path | None = None,
                 context: str | None = None) -> None:
        super().__init__(binary)
        self.global_args: list[str] = []
        if kubeconfig is not None:
            self.global_args += ["--kubeconfig", str(kubeconfig)]
        if context is not None:
            self.global_args += ["--context", context]

    def kustomize(self, directory: Path) -> str:
        return self.run(["kustomize", str(directory)], what=f"kubectl kustomize {directory}")

    def cluster(self, args: Sequence[str], *, what: str, stdin: bytes | None = None) -> str:
        return self.run([*self.global_args, *args], what=what, stdin=stdin)
