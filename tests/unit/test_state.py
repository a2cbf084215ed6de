"""Anti-rollback state: ordering rules, atomic writes that survive SIGKILL, loud corruption."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumer.state import (
    ApplianceState,
    InstalledRelease,
    RollbackError,
    StateFileError,
    check_rollback,
    load_state,
    record_install,
    save_state,
)
from ocicore.digest import Digest

D1, D2, D3 = (Digest.of(x) for x in (b"1", b"2", b"3"))
WHEN = datetime(2026, 11, 27, tzinfo=UTC)


def _state(version: str, sequence: int | None, digest: Digest) -> ApplianceState:
    release = InstalledRelease(version=version, sequence=sequence, digest=digest,
                               installedAt=WHEN)
    return record_install(ApplianceState(), "stable", release)


def test_older_sequence_is_refused_newer_allowed() -> None:
    state = _state("1.1.0", 5, D1)
    with pytest.raises(RollbackError, match=r"offers 1\.0\.0 \(sequence 4\), older than"):
        check_rollback(state, "stable", "1.0.0", 4, D2)
    check_rollback(state, "stable", "1.2.0", 6, D2)
    check_rollback(state, "stable", "1.1.0", 5, D1)  # unchanged
    check_rollback(state, "stable", "1.0.0", 4, D2, allow_downgrade=True)
    check_rollback(state, "nightly", "0.0.1", 1, D3)  # other channel: nothing recorded


def test_semver_when_no_sequence_and_same_version_other_digest() -> None:
    state = _state("1.10.0", None, D1)
    with pytest.raises(RollbackError, match="older than"):
        check_rollback(state, "stable", "1.9.0", None, D2)
    check_rollback(state, "stable", "1.11.0", None, D2)
    with pytest.raises(RollbackError, match="was installed with digest"):
        check_rollback(state, "stable", "1.10.0", None, D3)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert load_state(path) == ApplianceState()
    state = _state("1.0.0", 1, D1)
    save_state(path, state)
    assert load_state(path) == state


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{broken", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"schema":"alga.appliance.state/v1","channels":{"stable":{"version":"1"}}}',
         "channels.stable.digest"),
        (b'{"schema":"other/v9","channels":{}}', "has schema 'other/v9'"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
def test_corrupted_state_is_an_error_not_a_reset(tmp_path: Path, content: bytes,
                                                 fragment: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateFileError, match=fragment) as info:
        load_state(path)
    assert "mv " in info.value.hint
    assert path.read_bytes() == content  # untouched


WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from consumer.state import ApplianceState, InstalledRelease, record_install, save_state
from ocicore.digest import Digest
path = Path(sys.argv[1])
i = 0
sys.stdout.write("ready\\n"); sys.stdout.flush()
while True:
    i += 1
    release = InstalledRelease(version=f"1.0.{i}", sequence=i, digest=Digest.of(str(i).encode()),
                               installedAt=datetime.now(UTC))
    # pad the document so that a write takes a while and a kill lands mid-write
    state = record_install(ApplianceState(), "stable", release)
    for n in range(200):
        state = record_install(state, f"pad{n}", release)
    save_state(path, state)
"""


def test_state_survives_sigkill_during_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for delay in (0.05, 0.13, 0.21, 0.34):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if path.exists():
            state = load_state(path)  # never half-written
            assert state.channels["stable"].sequence is not None
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "state.json"]
        for name in leftovers:  # a killed writer may leave its temp file, never the target
            assert name.startswith(".state.json.")


def test_a_lower_version_published_later_is_still_a_downgrade() -> None:
    state = _state("2.0.0", 1, D1)
    with pytest.raises(RollbackError, match=r"offers 1\.9\.0 \(sequence 2\), older than"):
        check_rollback(state, "stable", "1.9.0", 2, D2)
    check_rollback(state, "stable", "2.0.1", 2, D2)


def test_non_semver_versions_fall_back_to_sequence() -> None:
    state = _state("build-7", 7, D1)
    check_rollback(state, "stable", "build-8", 8, D2)
    with pytest.raises(RollbackError, match="older than"):
        check_rollback(state, "stable", "build-6", 6, D2)
    with pytest.raises(RollbackError, match="cannot order versions"):
        check_rollback(_state("build-7", None, D1), "stable", "build-8", None, D2)
