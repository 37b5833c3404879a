"""Download and unpack MVTec AD with a progress bar and a checksum check.

URL and SHA-256 of the official archive (4.9 GB) as recorded by anomalib (``anomalib/data/datamodules/image/
mvtecad.py``, DOWNLOAD_INFO). MVTec AD is licensed CC BY-NC-SA 4.0: for teaching and research, not commercial use.
"""

import hashlib
import tarfile
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import DatasetError
from ..io import atomic_file

MVTEC_URL = ("https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
             "420938113-1629952094/mvtec_anomaly_detection.tar.xz")
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
CHUNK = 1 << 20


def sha256_of(path: str | Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    path = Path(path)
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                          desc=f"Checking {path.name}", disable=not progress) as bar:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify_checksum(path: str | Path, expected_sha256: str) -> None:
    """Raise if the file's SHA-256 differs: a truncated or tampered download must not be unpacked."""
    actual = sha256_of(path)
    if actual != expected_sha256.lower():
        raise DatasetError(
            f"Checksum mismatch for {path}: expected SHA-256 {expected_sha256}, got {actual}. "
            "The download is incomplete or corrupted: delete the file and download it again."
        )


def download_file(url: str, destination: str | Path, expected_sha256: str | None = None) -> Path:
    """Stream ``url`` to ``destination`` (atomically, with a progress bar), then verify it."""
    destination = Path(destination)
    with atomic_file(destination) as staging:
        with urllib.request.urlopen(url) as response, open(staging, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {destination.name}") as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        if expected_sha256:
            verify_checksum(staging, expected_sha256)
    return destination


def extract_archive(archive: str | Path, destination: str | Path) -> Path:
    """Unpack a tar archive, refusing members that would land outside ``destination``."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
    return destination


def download_mvtec(data_dir: str | Path, keep_archive: bool = False) -> Path:
    """MVTec AD into ``<data_dir>/mvtec_anomaly_detection`` (skipped when it is already there)."""
    target = Path(data_dir) / "mvtec_anomaly_detection"
    if target.is_dir() and any(target.iterdir()):
        return target
    archive = download_file(MVTEC_URL, Path(data_dir) / "mvtec_anomaly_detection.tar.xz", MVTEC_SHA256)
    extract_archive(archive, target)
    if not keep_archive:
        archive.unlink()
    return target

