import hashlib
import tarfile

import pytest

from workshop_lib.data.download import download_file, extract_archive, verify_checksum
from workshop_lib.errors import DatasetError


def test_download_verifies_checksum(tmp_path):
    source = tmp_path / "archive.bin"
    source.write_bytes(b"mvtec" * 1000)
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    target = download_file(source.as_uri(), tmp_path / "out" / "archive.bin", good)
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(DatasetError, match="Checksum mismatch .* delete the file and download it again"):
        download_file(source.as_uri(), tmp_path / "out" / "bad.bin", "0" * 64)
    assert not (tmp_path / "out" / "bad.bin").exists()  # a failed download leaves nothing behind
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["archive.bin"]
    verify_checksum(target, good.upper())


def test_extract_archive(tmp_path):
    (tmp_path / "src" / "bottle").mkdir(parents=True)
    (tmp_path / "src" / "bottle" / "a.txt").write_text("x")
    with tarfile.open(tmp_path / "a.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "src" / "bottle", arcname="bottle")
    out = extract_archive(tmp_path / "a.tar.xz", tmp_path / "dst")
    assert (out / "bottle" / "a.txt").read_text() == "x"
