"""pixelrobust.io: atomic writes and their stale temporaries, chunk tables read back, downloads checked
against their checksum."""

from __future__ import annotations

import pytest

from pixelrobust import io
from pixelrobust.errors import ChecksumError, PixelrobustError
from pixelrobust.io import download, file_digest


def test_stale_temporaries_of_other_outputs_are_kept(tmp_path):
    dest = tmp_path / "chunk-1.csv"
    stale = tmp_path / ".chunk-1.csv.abcd_123.tmp"
    stale.write_text("half")
    other = tmp_path / ".chunk-1.csv.md.abcd_123.tmp"  # another output's temporary
    other.write_text("half")
    with io.atomic_path(dest) as tmp:
        tmp.write_text("x\n")
    assert dest.read_text() == "x\n" and not stale.exists() and other.exists()


def test_empty_chunk_table_reads_back_as_empty(tmp_path):
    import pandas as pd

    io.write_table(pd.DataFrame(), tmp_path / "empty.csv")
    assert len(io.read_table(tmp_path / "empty.csv")) == 0
    io.write_table(pd.DataFrame({"a": [1]}), tmp_path / "one.csv")
    assert io.read_table(tmp_path / "one.csv").a.tolist() == [1]
    with pytest.raises(PixelrobustError, match="does not exist"):
        io.read_table(tmp_path / "none.csv")


# --- the official-download route ----------------------------------------------------------------


def test_download_verifies_checksum(tmp_path):
    src = tmp_path / "file.bin"
    src.write_bytes(b"pixelrobust" * 100)
    good = file_digest(src)
    source = {"url": src.as_uri(), "checksum": good, "algorithm": "sha256"}
    out = download(out={"file": tmp_path / "dl" / "ok.bin"}, source=source)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(ChecksumError, match="expected 0000"):
        download(out={"file": tmp_path / "dl" / "bad.bin"}, source={**source, "checksum": "0" * 64})
    assert not (tmp_path / "dl" / "bad.bin").exists()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["ok.bin"]
