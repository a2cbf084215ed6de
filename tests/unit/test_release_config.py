"""release.toml validation: the repository's own file loads; each mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from publisher.release_config import ReleaseConfigError, load_release_config

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "release.toml").read_text()


def test_repository_release_toml_loads() -> None:
    config = load_release_config(ROOT / "release.toml")
    assert config.release_repository == "alga/appliance-release"
    assert config.config_repository == "alga/appliance-config"
    assert config.image("pgbouncer").tag == "1.24.1"
    assert config.image("algaCore").tag is None


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('namespace = "alga"', 'namespace = "Alga"', "registry.namespace: invalid repository"),
        ('name = "appliance"', 'name = "Appliance!"', "appliance.name: 'Appliance!' must be"),
        ('channels = ["stable", "nightly"]', "channels = []", "appliance.channels"),
        ('channels = ["stable", "nightly"]', 'channels = ["-x"]', "invalid tag '-x'"),
        ('algaCore = "alga/sebastian"\n', "", "images.algaCore: required"),
        ('lint = true', 'lint = true\nlnit = false', "charts.lnit: Extra inputs"),
        ('key = "keys/release.key"', "", "signing.key: Field required"),
        ('binding_days = 0', "binding_days = -1", "signing.binding_days"),
        ('tag = "1.24.1"', 'tag = "bad tag"', "invalid tag 'bad tag'"),
        ('[registry]', '[registry', "not valid TOML"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    assert old in GOOD
    path = tmp_path / "release.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ReleaseConfigError, match=fragment) as info:
        load_release_config(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReleaseConfigError, match="does not exist"):
        load_release_config(tmp_path / "release.toml")
