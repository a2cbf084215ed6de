"""Locating the external tools that tests need; a missing tool fails loudly.

Tests never skip for a missing tool: they fail with the command that installs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
SETUP_COMMAND = "./scripts/setup.sh (or: make test)"


def require_tool(name: str) -> str:
    """Return the path of ``name`` (the provisioned tools folder first, then PATH) or fail."""
    local = TOOLS_BIN / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"required tool {name!r} is not installed; run {SETUP_COMMAND}", pytrace=False)
