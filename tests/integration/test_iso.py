"""The appliance ISO: export the control-plane image from a real registry, stage the
overlay and the nocloud seed, remaster a synthetic base ISO (BIOS + EFI El Torito, GPT,
Joliet) with xorriso, and read the result back with xorriso, osirrox, skopeo and
sha256sum. Also: reproducibility, refusals, and the bootstrap script's roll-forward-only
behaviour against fake ``appliance-release`` and ``k3s`` commands."""

from __future__ import annotations

import configparser
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from consumer.tools import ToolMissingError
from ocicore.client import RegistryClient
from ocicore.digest import Digest
from ocicore.errors import InvalidInputError
from ocicore.jsonutil import canonical_json
from ocicore.layout import OCILayout
from ocicore.models import OCI_IMAGE_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor, Manifest
from ocicore.store import ContentStore
from ocicore.tarpack import FileEntry, pack_entries_layer
from publisher import iso
from tests.registry import RegistryInstance
from tests.tools import require_tool

pytestmark = pytest.mark.integration

REPO = "alga/appliance-control-plane"
TAG = "1.4.0"
BASE_FILES = {"/README", "/boot/grub/grub.cfg", "/boot/eltorito.img"}  # + the boot catalog
ADDED_FILES = {
    "/appliance/overlay/etc/systemd/system/appliance-bootstrap.service",
    "/appliance/overlay/etc/systemd/system/appliance-bootstrap.timer",
    "/appliance/overlay/usr/local/lib/appliance/bootstrap.sh",
    "/appliance/overlay/etc/appliance/bootstrap.env",
    "/appliance/overlay/etc/appliance/trust.pem",
    "/appliance/images/control-plane.oci.tar",
    "/nocloud/user-data",
    "/nocloud/meta-data",
}
EFI_TYPE_GUID = "28732ac11ff8d211ba4b00a0c93ec93b"  # EFI System Partition, as xorriso shows it
BOOTSTRAP = iso.OVERLAY_SOURCE / "usr/local/lib/appliance/bootstrap.sh"


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


# -- fixtures ----------------------------------------------------------------------------


def _push_image(store: ContentStore, repo: str, tag: str) -> Digest:
    """A one-layer linux/amd64 image, as ``ctr images import`` would unpack it."""
    layer = pack_entries_layer([FileEntry("etc/control-plane", data=b"baseline 1.4.0\n")])
    config = canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"User": "10001"},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
    )
    store.push_blob(repo, config)
    store.push_blob(repo, layer.compressed)
    manifest = Manifest(
        schema_version=2,
        media_type=OCI_MANIFEST,
        config=Descriptor.of(OCI_IMAGE_CONFIG, config),
        layers=[Descriptor(media_type=OCI_LAYER_GZIP, digest=layer.digest, size=layer.size)],
    )
    return store.push_manifest(repo, manifest.to_json(), OCI_MANIFEST, tag=tag)


def _make_base_iso(root: Path, out: Path) -> None:
    """A small bootable-looking ISO: BIOS El Torito image, an EFI image in an appended
    GPT partition, a protective MBR, Rock Ridge and Joliet (as distribution ISOs have)."""
    tree = root / "tree"
    (tree / "boot/grub").mkdir(parents=True)
    (tree / "boot/grub/grub.cfg").write_text("search --fs-uuid --set=root placeholder\n")
    (tree / "README").write_text("synthetic base ISO\n")
    (tree / "boot/eltorito.img").write_bytes(b"\xeb\x3c" + b"\x00" * 2046)
    efi = root / "efi.img"
    efi.write_bytes(b"\x00" * 65536)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    _run(
        require_tool("xorriso"), "-no_rc", "-as", "mkisofs", "-R", "-J", "-V", "BASE_LIVE",
        "-b", "boot/eltorito.img", "-no-emul-boot", "-boot-load-size", "4",
        "-c", "boot/boot.cat", "--protective-msdos-label",
        "-append_partition", "2", "0xef", efi, "-appended_part_as_gpt",
        "-eltorito-alt-boot", "-e", "--interval:appended_partition_2:all::", "-no-emul-boot",
        "-o", out, tree, env=env,
    )  # fmt: skip


def _trust_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _ssh_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode() + " ops@example.com"


@dataclass(frozen=True)
class Built:
    inputs: iso.IsoInputs
    base_iso: Path
    archive: iso.ImageArchive
    staging: Path
    iso: Path
    digest: Digest
    registry_host: str
    work: Path
    built_at: float  # time.time() when the ISO was written


@pytest.fixture(scope="module")
def built(registry: RegistryInstance, tmp_path_factory: pytest.TempPathFactory) -> Built:
    require_tool("xorriso")
    work = tmp_path_factory.mktemp("iso")
    base = work / "base.iso"
    _make_base_iso(work / "base", base)
    with RegistryClient(registry.host, credentials=None) as client:
        digest = _push_image(client, REPO, TAG)
        archive = iso.export_image_archive(client, REPO, TAG, work / "control-plane.oci.tar")
    inputs = iso.IsoInputs(
        name="appliance",
        version="1.4.0",
        registry=registry.host,
        channel="stable",
        hostname="appliance-01",
        ssh_authorized_keys=(_ssh_key(),),
        trust_pem=_trust_pem(),
    )
    staging = iso.stage_overlay(inputs, iso.OVERLAY_SOURCE, archive.path, work / "staging")
    out = iso.remaster(base, staging, work / "out", inputs.name, inputs.version)
    return Built(inputs, base, archive, staging, out, digest, registry.host, work, time.time())


def _after_a_clock_second(since: float) -> None:
    """Sleep until the wall clock is in another second: a time leaking into the bytes
    (xorriso writes seconds) then shows up as a difference."""
    time.sleep(max(0.0, since + 1.1 - time.time()))


@pytest.fixture(scope="module")
def extracted(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("iso-extracted") / "root"
    _run(require_tool("osirrox"), "-indev", built.iso, "-extract", "/", dest)
    return dest


def _iso_files(path: Path) -> set[str]:
    out = _run(require_tool("xorriso"), "-no_rc", "-indev", path, "-find", "/", "-type", "f")
    return {line.strip().strip("'") for line in out.splitlines() if line.startswith("'")}


# -- the remastered ISO ------------------------------------------------------------------


def test_iso_holds_base_overlay_seed_and_image(built: Built) -> None:
    assert built.iso == built.work / "out" / "appliance-1.4.0.iso"
    files = _iso_files(built.iso)
    assert files >= BASE_FILES | ADDED_FILES
    assert files - BASE_FILES - ADDED_FILES == set()


def test_checksum_file_verifies_with_sha256sum(built: Built) -> None:
    checksum = built.iso.with_name("appliance-1.4.0.iso.sha256")
    text = checksum.read_text()
    assert text == f"{hashlib.sha256(built.iso.read_bytes()).hexdigest()}  appliance-1.4.0.iso\n"
    out = _run(require_tool("sha256sum"), "-c", checksum.name, cwd=checksum.parent)
    assert out.strip() == "appliance-1.4.0.iso: OK"


def test_base_boot_setup_and_files_are_kept(built: Built, extracted: Path) -> None:
    def report(path: Path) -> list[str]:
        out = _run(
            require_tool("xorriso"), "-no_rc", "-indev", path,
            "-report_el_torito", "plain", "-report_system_area", "plain",
        )  # fmt: skip
        # Block addresses move (the tree grew); what is booted, and how, must not.
        keep = ("El Torito img path", "El Torito img opts", "El Torito img blks",
                "El Torito cat path", "System area summary", "GPT disk GUID")  # fmt: skip
        lines = [ln for ln in out.splitlines() if ln.startswith(keep)]
        # The EFI partition (GPT gap fillers come and go with the layout).
        lines += [" ".join(ln.split()[4:]) for ln in out.splitlines()
                  if ln.startswith("GPT type GUID") and EFI_TYPE_GUID in ln]  # fmt: skip
        lines += [" ".join(ln.split()[:-1]) for ln in out.splitlines()  # all but the LBA
                  if ln.startswith("El Torito boot img")]  # fmt: skip
        return sorted(lines)

    base, remastered = report(built.base_iso), report(built.iso)
    assert remastered == base
    assert any("UEFI" in ln for ln in remastered) and any("BIOS" in ln for ln in remastered)
    assert any(EFI_TYPE_GUID in ln for ln in remastered)
    assert (extracted / "README").read_text() == "synthetic base ISO\n"
    assert (extracted / "boot/grub/grub.cfg").read_text().startswith("search --fs-uuid")

    pvd = _run(require_tool("xorriso"), "-no_rc", "-indev", built.iso, "-pvd_info")
    base_pvd = _run(require_tool("xorriso"), "-no_rc", "-indev", built.base_iso, "-pvd_info")
    assert "Volume Id    : APPLIANCE_1_4_0" in pvd
    # GRUB's --fs-uuid is the volume modification time: kept from the base.
    modified = next(ln for ln in base_pvd.splitlines() if ln.startswith("Modif. Time"))
    assert modified in pvd.splitlines()
    head = built.iso.read_bytes()[16 * 2048 : 20 * 2048]  # the volume descriptors
    descriptors = [head[i : i + 2048] for i in range(0, len(head), 2048)]
    assert any(d[0] == 2 and d[88:91] == b"%/E" for d in descriptors), "Joliet was dropped"


def test_overlay_on_the_iso(built: Built, extracted: Path) -> None:
    overlay = extracted / "appliance/overlay"
    script = overlay / "usr/local/lib/appliance/bootstrap.sh"
    assert script.read_bytes() == BOOTSTRAP.read_bytes()
    assert script.stat().st_mode & 0o777 == 0o755
    assert (overlay / "etc/appliance/trust.pem").read_text() == built.inputs.trust_pem
    env = (overlay / "etc/appliance/bootstrap.env").read_text()
    assert f"REGISTRY='{built.registry_host}'\n" in env
    assert "CHANNEL='stable'\n" in env
    assert "@" not in env.replace(built.registry_host, "")

    service = configparser.ConfigParser(strict=True, interpolation=None)
    service.read_string((overlay / "etc/systemd/system/appliance-bootstrap.service").read_text())
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == "/usr/local/lib/appliance/bootstrap.sh"
    assert {"network-online.target", "k3s.service"} <= set(service["Unit"]["After"].split())
    timer = configparser.ConfigParser(strict=True, interpolation=None)
    timer.read_string((overlay / "etc/systemd/system/appliance-bootstrap.timer").read_text())
    assert timer["Timer"]["Unit"] == "appliance-bootstrap.service"
    assert timer["Timer"]["OnUnitActiveSec"]


def test_nocloud_seed_on_the_iso(built: Built, extracted: Path) -> None:
    user_data_text = (extracted / "nocloud/user-data").read_text()
    assert user_data_text.startswith("#cloud-config\n")
    user_data = yaml.safe_load(user_data_text)
    assert user_data["hostname"] == "appliance-01"
    (user,) = user_data["users"]
    assert user["name"] == "appliance"
    assert user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == list(built.inputs.ssh_authorized_keys)
    (env_file,) = user_data["write_files"]
    assert env_file["path"] == "/etc/appliance/bootstrap.env"
    assert env_file["content"] == (
        extracted / "appliance/overlay/etc/appliance/bootstrap.env"
    ).read_text()
    assert f"REGISTRY='{built.registry_host}'" in env_file["content"]
    assert "CHANNEL='stable'" in env_file["content"]
    install, *rest = user_data["runcmd"]
    assert "/dev/disk/by-label/APPLIANCE_1_4_0" in install[2]
    assert iso.HOST_IMAGE_ARCHIVE in install[2]
    assert ["systemctl", "enable", "--now", "appliance-bootstrap.timer"] in rest

    meta = yaml.safe_load((extracted / "nocloud/meta-data").read_text())
    assert meta == {"instance-id": "appliance-1.4.0", "local-hostname": "appliance-01"}


def test_image_archive_on_the_iso_is_the_pushed_image(built: Built, extracted: Path) -> None:
    archive = extracted / "appliance/images/control-plane.oci.tar"
    assert filecmp.cmp(archive, built.archive.path, shallow=False)
    tagged = f"{built.registry_host}/{REPO}:{TAG}"
    pinned = f"{built.registry_host}/{REPO}@{built.digest}"
    assert built.archive.names == (tagged, pinned)
    assert built.archive.digest == built.digest

    skopeo = require_tool("skopeo")
    for name in (tagged, pinned):
        raw = _run(skopeo, "inspect", "--raw", f"oci-archive:{archive}:{name}")
        assert f"sha256:{hashlib.sha256(raw.encode()).hexdigest()}" == str(built.digest)
        info = json.loads(_run(skopeo, "inspect", f"oci-archive:{archive}:{name}"))
        assert info["Digest"] == str(built.digest)
        assert info["Architecture"] == "amd64"

    layout = OCILayout.from_tar(archive, built.work / "archive-layout")
    index = json.loads((layout.path / "index.json").read_bytes())
    assert [m["annotations"] for m in index["manifests"]] == [
        {"org.opencontainers.image.ref.name": tagged},
        {"org.opencontainers.image.ref.name": pinned},
    ]
    assert layout.resolve(REPO, TAG).digest == built.digest


# -- reproducibility -----------------------------------------------------------------------


def test_two_runs_give_identical_bytes(built: Built, tmp_path: Path) -> None:
    """Restaged from the same inputs in other directories, with other file times."""
    again = tmp_path / "again"
    archive = iso.export_image_archive(
        OCILayout.from_tar(built.archive.path, tmp_path / "layout"),
        REPO, TAG, tmp_path / "cp.oci.tar", registry=built.registry_host,
    )  # fmt: skip
    assert archive.path.read_bytes() == built.archive.path.read_bytes()
    staging = iso.stage_overlay(built.inputs, iso.OVERLAY_SOURCE, archive.path, again / "stage")
    for path in staging.rglob("*"):
        os.utime(path, (1_234_567_890, 1_234_567_890))
    _after_a_clock_second(built.built_at)
    out = iso.remaster(built.base_iso, staging, again / "out", "appliance", "1.4.0")
    assert out.read_bytes() == built.iso.read_bytes()
    assert out.with_name(out.name + ".sha256").read_text() == built.iso.with_name(
        built.iso.name + ".sha256"
    ).read_text()


def test_base_without_volume_dates_gets_them_from_source_date_epoch(
    built: Built, tmp_path: Path
) -> None:
    """No modification time in the base to keep: the UUID comes from the epoch."""
    base = tmp_path / "dateless.iso"
    data = bytearray(built.base_iso.read_bytes())
    pvd = 16 * 2048
    data[pvd + 813 : pvd + 847] = (b"0" * 16 + b"\x00") * 2  # creation, modification
    base.write_bytes(bytes(data))
    first = iso.remaster(base, built.staging, tmp_path / "a", "appliance", "1.4.0", epoch=86_400)
    _after_a_clock_second(time.time())
    second = iso.remaster(base, built.staging, tmp_path / "b", "appliance", "1.4.0", epoch=86_400)
    assert first.read_bytes() == second.read_bytes()
    pvd_info = _run(require_tool("xorriso"), "-no_rc", "-indev", first, "-pvd_info")
    assert "Modif. Time  : 1970010200000000" in pvd_info.splitlines()


# -- refusals ------------------------------------------------------------------------------


def test_refuses_missing_or_non_iso_base(built: Built, tmp_path: Path) -> None:
    with pytest.raises(iso.BaseIsoError, match="does not exist"):
        iso.remaster(tmp_path / "nope.iso", built.staging, tmp_path, "appliance", "1.4.0")
    not_iso = tmp_path / "base.iso"
    not_iso.write_bytes(b"\x00" * 40_000)
    with pytest.raises(iso.BaseIsoError, match="not an ISO 9660 image"):
        iso.remaster(not_iso, built.staging, tmp_path, "appliance", "1.4.0")
    with pytest.raises(iso.BaseIsoError, match=r"already contains /appliance, /nocloud"):
        iso.remaster(built.iso, built.staging, tmp_path, "appliance", "1.4.1")
    assert list(tmp_path.glob("*.iso*")) == [not_iso]


def test_refuses_existing_destination_unless_overwrite(built: Built, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    first = iso.remaster(built.base_iso, built.staging, dest, "appliance", "1.4.0")
    with pytest.raises(iso.DestinationExistsError, match=r"appliance-1\.4\.0\.iso already exists"):
        iso.remaster(built.base_iso, built.staging, dest, "appliance", "1.4.0")
    first.unlink()  # the checksum file alone also blocks
    with pytest.raises(iso.DestinationExistsError, match=r"\.iso\.sha256 already exists"):
        iso.remaster(built.base_iso, built.staging, dest, "appliance", "1.4.0")
    again = iso.remaster(built.base_iso, built.staging, dest, "appliance", "1.4.0", overwrite=True)
    assert again.read_bytes() == built.iso.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [
        "appliance-1.4.0.iso",
        "appliance-1.4.0.iso.sha256",
    ]

    with pytest.raises(iso.DestinationExistsError):
        iso.export_image_archive(
            OCILayout.from_tar(built.archive.path, tmp_path / "layout"),
            REPO, TAG, built.archive.path, registry="r.example.com",
        )  # fmt: skip


def test_refuses_incomplete_staging(built: Built, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    shutil.copytree(built.staging, staging)
    (staging / "nocloud/meta-data").unlink()
    with pytest.raises(iso.StagingError, match="lacks nocloud/meta-data"):
        iso.remaster(built.base_iso, staging, tmp_path / "out", "appliance", "1.4.0")
    with pytest.raises(iso.StagingError, match="does not exist"):
        iso.remaster(built.base_iso, tmp_path / "none", tmp_path / "out", "appliance", "1.4.0")
    with pytest.raises(iso.StagingError, match="is not empty"):
        iso.stage_overlay(built.inputs, iso.OVERLAY_SOURCE, built.archive.path, staging)
    with pytest.raises(iso.StagingError, match=r"not an OCI archive|not a readable tar"):
        iso.stage_overlay(
            built.inputs, iso.OVERLAY_SOURCE, built.base_iso, tmp_path / "staging2"
        )
    assert not (tmp_path / "out").exists()


def test_missing_xorriso_names_the_setup_command(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ToolMissingError, match=r"scripts/setup\.sh"):
        iso.remaster(
            built.base_iso, built.staging, tmp_path, "appliance", "1.4.0",
            xorriso=str(tmp_path / "no-xorriso"),
        )  # fmt: skip
    # A machine without xorriso: nothing on PATH, no provisioned .tools/bin.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("APPLIANCE_RELEASE_XORRISO", raising=False)
    monkeypatch.setattr("consumer.tools._REPO_TOOLS", tmp_path)
    with pytest.raises(ToolMissingError, match=r"xorriso is not installed.*setup\.sh"):
        iso.remaster(built.base_iso, built.staging, tmp_path, "appliance", "1.4.0")


def test_export_from_a_layout_needs_a_registry_name(built: Built, tmp_path: Path) -> None:
    layout = OCILayout.from_tar(built.archive.path, tmp_path / "layout")
    with pytest.raises(InvalidInputError, match="no registry name"):
        iso.export_image_archive(layout, REPO, TAG, tmp_path / "cp.tar")
    by_digest = iso.export_image_archive(
        layout, REPO, built.digest, tmp_path / "cp.tar", registry="registry.example.com:5000"
    )
    assert by_digest.names == (f"registry.example.com:5000/{REPO}@{built.digest}",)
    info = json.loads(_run(require_tool("skopeo"), "inspect", f"oci-archive:{by_digest.path}"))
    assert info["Digest"] == str(built.digest)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "Appliance", "DNS label"),
        ("version", "v1.4.0", "semantic version"),
        ("registry", "https://registry.example.com", "host"),
        ("channel", "stable channel", "valid tag"),
        ("hostname", "appliance_01", "hostname"),
        ("ssh_authorized_keys", ["ssh-ed25519 not-base64"], "SSH public key"),
        ("ssh_authorized_keys", [], "at least 1"),
        ("trust_pem", "not a key", "no PEM public key"),
        ("volume_id", "has space", "1-32 characters"),
    ],
)
def test_invalid_inputs_are_one_line_errors(field: str, value: object, message: str) -> None:
    good = {
        "name": "appliance",
        "version": "1.4.0",
        "registry": "registry.example.com/alga",
        "channel": "stable",
        "hostname": "appliance-01",
        "ssh_authorized_keys": [_ssh_key()],
        "trust_pem": _trust_pem(),
    }
    assert iso.IsoInputs.from_mapping(good).label == "APPLIANCE_1_4_0"
    with pytest.raises(iso.IsoInputError, match=message) as info:
        iso.IsoInputs.from_mapping({**good, field: value})
    assert field in info.value.message
    assert "\n" not in str(info.value)


# -- bootstrap.sh: roll forward only -----------------------------------------------------

NEW = "registry.example.com/alga/appliance-control-plane@sha256:" + "b" * 64
OLD = "registry.example.com/alga/appliance-control-plane@sha256:" + "a" * 64


@dataclass
class Host:
    """A fake host: bootstrap.env, state dir, and fake commands that log their args."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def ref_file(self) -> Path:
        return self.state / "control-plane.ref"

    @property
    def archive(self) -> Path:
        return self.root / "control-plane.oci.tar"

    def calls(self, command: str) -> list[str]:
        log = self.root / f"{command}.log"
        return log.read_text().splitlines() if log.exists() else []

    def answer(self, stdout: str, status: int = 0) -> None:
        """What the fake ``appliance-release`` prints and exits with next."""
        (self.root / "answer").write_text(stdout)
        (self.root / "status").write_text(str(status))

    def fail(self, command: str, subcommand: str) -> None:
        (self.root / f"fail-{command}-{subcommand}").touch()

    def run(self) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "APPLIANCE_BOOTSTRAP_ENV": str(self.root / "bootstrap.env"),
            "APPLIANCE_IMAGE_ARCHIVE": str(self.archive),
            "FAKE_ROOT": str(self.root),
        }
        return subprocess.run(
            [require_tool("sh"), str(BOOTSTRAP)],
            capture_output=True, text=True, env=env, timeout=30, check=False,
        )  # fmt: skip


_FAKE_RELEASE = """#!/bin/sh
printf '%s\\n' "$*" >>"$FAKE_ROOT/appliance-release.log"
cat "$FAKE_ROOT/answer"
exit "$(cat "$FAKE_ROOT/status")"
"""
_FAKE_K3S = """#!/bin/sh
printf '%s\\n' "$*" >>"$FAKE_ROOT/k3s.log"
for word in "$@"; do
    if [ -e "$FAKE_ROOT/fail-k3s-$word" ]; then echo "k3s: $word failed" >&2; exit 1; fi
done
"""


@pytest.fixture
def host(tmp_path: Path) -> Host:
    fake = Host(tmp_path)
    (tmp_path / "bin").mkdir()
    for name, text in (("appliance-release", _FAKE_RELEASE), ("k3s", _FAKE_K3S)):
        (tmp_path / "bin" / name).write_text(text)
        (tmp_path / "bin" / name).chmod(0o755)
    template = (iso.OVERLAY_SOURCE / "etc/appliance/bootstrap.env").read_text()
    env = (
        template.replace("@REGISTRY@", "registry.example.com/alga")
        .replace("@CHANNEL@", "stable")
        .replace("/etc/appliance/trust.pem", str(tmp_path / "trust.pem"))
        .replace("/var/lib/appliance", str(fake.state))
    )
    (tmp_path / "bootstrap.env").write_text(env)
    fake.archive.write_bytes(b"baked image")
    return fake


def test_bootstrap_first_boot_imports_and_applies(host: Host) -> None:
    host.answer(NEW + "\n")
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.calls("appliance-release") == [
        f"control-plane-image stable --registry registry.example.com/alga "
        f"--trust {host.root / 'trust.pem'} --state {host.state / 'state.json'}"
    ]
    assert host.calls("k3s") == [
        f"ctr --namespace k8s.io images import {host.archive}",
        f"kubectl --namespace appliance-system set image deployment/appliance-control-plane "
        f"control-plane={NEW}",
        "kubectl --namespace appliance-system rollout status "
        "deployment/appliance-control-plane --timeout=10m",
    ]
    assert host.ref_file.read_text() == NEW + "\n"
    assert sorted(p.name for p in host.state.iterdir()) == [
        "baseline-imported", "control-plane.ref"
    ]  # fmt: skip


def test_bootstrap_does_nothing_when_up_to_date(host: Host) -> None:
    host.state.mkdir()
    (host.state / "baseline-imported").touch()
    host.ref_file.write_text(NEW + "\n")
    host.answer(NEW + "\n")
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.calls("k3s") == []
    assert "up to date" in result.stderr


def test_bootstrap_rolls_forward_to_a_new_reference(host: Host) -> None:
    host.state.mkdir()
    (host.state / "baseline-imported").touch()
    host.ref_file.write_text(OLD + "\n")
    host.answer(NEW + "\n")
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert [c for c in host.calls("k3s") if "set image" in c] == [
        "kubectl --namespace appliance-system set image deployment/appliance-control-plane "
        f"control-plane={NEW}"
    ]
    assert host.ref_file.read_text() == NEW + "\n"
    assert f"{OLD} -> {NEW}" in result.stderr


@pytest.mark.parametrize(
    ("stdout", "status"),
    [
        ("", 3),  # the command failed (e.g. it refused a downgrade, or no registry)
        (OLD + "\n", 5),  # output on failure is not used either
        ("registry.example.com/alga/appliance-control-plane:1.4.0\n", 0),  # not pinned
        (NEW + "\n" + NEW + "\n", 0),  # not one line
        (NEW[:-1] + "\n", 0),  # short digest
        ("bad repo@sha256:" + "b" * 64 + "\n", 0),
    ],
)
def test_bootstrap_failure_applies_nothing(host: Host, stdout: str, status: int) -> None:
    host.state.mkdir()
    (host.state / "baseline-imported").touch()
    host.ref_file.write_text(OLD + "\n")
    host.answer(stdout, status)
    result = host.run()
    assert result.returncode != 0
    assert host.calls("k3s") == []
    assert host.ref_file.read_text() == OLD + "\n"
    assert "appliance-bootstrap: error:" in result.stderr
    assert list(host.state.glob("*.tmp.*")) == []


def test_bootstrap_failed_rollout_is_not_recorded(host: Host) -> None:
    host.state.mkdir()
    (host.state / "baseline-imported").touch()
    host.ref_file.write_text(OLD + "\n")
    host.answer(NEW + "\n")
    host.fail("k3s", "rollout")
    result = host.run()
    assert result.returncode != 0
    assert host.ref_file.read_text() == OLD + "\n"
    assert "did not roll out" in result.stderr


def test_bootstrap_failed_import_still_rolls_forward_but_fails(host: Host) -> None:
    host.answer(NEW + "\n")
    host.fail("k3s", "import")
    result = host.run()
    assert result.returncode == 1
    assert host.ref_file.read_text() == NEW + "\n"
    assert not (host.state / "baseline-imported").exists()
    assert "importing" in result.stderr and "will retry" in result.stderr


def test_bootstrap_without_settings_fails(host: Host) -> None:
    env = host.root / "bootstrap.env"
    env.write_text(env.read_text().replace("CHANNEL='stable'", "CHANNEL=''"))
    host.answer(NEW + "\n")
    result = host.run()
    assert result.returncode == 1
    assert "CHANNEL is not set" in result.stderr
    assert host.calls("appliance-release") == [] and host.calls("k3s") == []
