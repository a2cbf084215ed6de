"""The progress protocol: the library reports, the caller (the CLI) renders."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives transfer progress. Implementations must be thread-safe."""

    def start(self, key: str, description: str, total: int | None) -> None:
        """A transfer named ``key`` begins; ``total`` bytes if known."""

    def advance(self, key: str, amount: int) -> None:
        """``amount`` more bytes of ``key`` were transferred."""

    def finish(self, key: str, outcome: str) -> None:
        """``key`` ended: ``"done"``, ``"skipped"`` (already there), ``"mounted"``, ``"failed"``."""


class NoProgress:
    """The default: reports go nowhere."""

    def start(self, key: str, description: str, total: int | None) -> None:
        return None

    def advance(self, key: str, amount: int) -> None:
        return None

    def finish(self, key: str, outcome: str) -> None:
        return None
