"""The external tools the suite drives are installed and run (none is skipped when missing)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.tools import TOOLS_BIN, require_tool

pytestmark = pytest.mark.integration


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stderr}"
    return done.stdout + done.stderr


def test_helm_is_the_provisioned_v3_or_v4() -> None:
    helm = require_tool("helm")
    assert helm == str(TOOLS_BIN / "helm"), "helm must come from .tools/bin (scripts/setup.sh)"
    assert re.match(r"v[34]\.\d+\.\d+", run(helm, "version", "--short"))


@pytest.mark.parametrize(
    ("tool", "pattern"),
    [
        ("skopeo", r"skopeo version \d+\.\d+"),
        ("umoci", r"umoci version \d+\.\d+"),
        ("xorriso", r"xorriso \d+\.\d+"),
        ("docker-registry", r"distribution v?2\.\d+"),
    ],
)
def test_tool_answers_version(tool: str, pattern: str) -> None:
    assert re.search(pattern, run(require_tool(tool), "--version"))


def test_kubectl_answers_version() -> None:
    # kubectl has no --version flag; `version --client` needs no cluster.
    assert re.search(
        r"Client Version: v1\.\d+", run(require_tool("kubectl"), "version", "--client")
    )
