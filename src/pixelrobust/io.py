"""File helpers: atomic writes, checksums, downloads, tables.

Every result is written under a temporary name in the destination folder and renamed into place
only when complete, so a killed job never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ChecksumError, PixelrobustError

CHUNK = 1 << 20


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``sha256`` or ``md5``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(
    path: str | os.PathLike, expected: str, algorithm: str = "sha256", what: str = "", fix: str = ""
) -> None:
    """Raise ChecksumError unless the file's digest starts with ``expected``.

    A shorter ``expected`` is compared as a prefix (torchvision publishes the first 8 hex digits of
    its weights' sha256 in the file name; that is all that is known for those files).
    """
    got = file_digest(path, algorithm)
    expected = expected.lower()
    if not got.startswith(expected):
        raise ChecksumError(
            f"{what or 'file'} {path}: {algorithm} is {got}, expected {expected}"
            + (" (prefix)" if len(expected) < len(got) else "")
            + ". The file is corrupt, truncated or not the one expected"
            + (f"; {fix}" if fix else "; delete it and rerun to fetch it again")
            + "."
        )


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it to ``dest`` only if the block succeeds.

    Works for files and folders. On error the temporary is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + suffix, dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(dest: str | os.PathLike, suffix: str = "") -> list[Path]:
    """Delete temporaries of ``dest`` left by a killed writer (SIGKILL, power loss); return them.

    :func:`atomic_path` names them ``.<name>.<8 random characters>.tmp<suffix>`` next to ``dest``.
    A workflow never runs two jobs that write the same output, so any such sibling found when a
    new write of ``dest`` begins belongs to a writer that is gone.
    """
    dest = Path(dest)
    pattern = re.compile(
        r"\." + re.escape(dest.name) + r"\.[a-z0-9_]{8}\.tmp" + re.escape(suffix) + "$"
    )
    removed = []
    try:
        siblings = list(dest.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        if pattern.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def download(*, out: dict, source: dict, what: str = "") -> Path:
    """Rule ``download``: download ``source["url"]`` to ``out["file"]`` (returned) and verify its checksum
    (``source["checksum"]``, None: none; hash ``source["algorithm"]``) before the file appears under its
    name."""
    url, checksum, algorithm = source["url"], source["checksum"], source["algorithm"]
    dest = Path(out["file"])
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f, CHUNK)
        except OSError as e:  # URLError is an OSError
            raise ChecksumError(
                f"could not download {what or dest.name} from {url}: {e}. Check the network, or set "
                "data_mirror (config) / PIXELROBUST_MIRROR to a local copy (see config/README.md)."
            ) from e
        if checksum:
            verify_checksum(
                tmp,
                checksum,
                algorithm,
                what=f"download of {url}",
                fix="the server sent a different file; nothing was kept",
            )
    return dest


def copy_verified(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    checksum: str | None,
    algorithm: str = "sha256",
    what: str = "",
    fix: str = "",
) -> Path:
    """Copy ``src`` to ``dest`` atomically after checking the copy's checksum."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        if checksum:
            verify_checksum(tmp, checksum, algorithm, what=what or f"file {src}", fix=fix)
    return Path(dest)


def save_npz(path: str | os.PathLike, **arrays) -> None:
    """Write arrays to a compressed ``.npz`` atomically (no half-written file under ``path``)."""
    # lazy: io imports fast (provenance, report, the Snakefile); numpy only here
    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def load_npz(path: str | os.PathLike) -> dict:
    """All arrays of an ``.npz`` file (no pickles), with a clear error when it is corrupt or truncated."""
    # lazy: io imports fast (provenance, report, the Snakefile); numpy only here
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"cannot read {path} ({type(e).__name__}: {e}); delete it and rerun the rule that writes it"
        ) from e


def write_table(
    df,
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike | None = None,
    float_format: str = "%.4f",
) -> None:
    """Write a DataFrame as CSV (and optionally Markdown), each atomically."""
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format, lineterminator="\n")
    if md_path is not None:
        with atomic_path(md_path) as tmp:
            tmp.write_text(markdown_table(df, float_format))


def read_table(path: str | os.PathLike):
    """Read a CSV written by :func:`write_table`; a table with no rows and no columns reads as empty.

    ``write_table`` writes an empty DataFrame without columns as a single newline, which
    ``pandas.read_csv`` rejects (``EmptyDataError``); such a chunk is a finished, empty table.
    A missing or unparsable file is a ``PixelrobustError`` that names it.
    """
    # lazy: io imports fast (provenance, report, the Snakefile); pandas only here
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise PixelrobustError(f"table {path} does not exist; rerun the rule that writes it")
    if not path.read_bytes().strip():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise PixelrobustError(
            f"cannot read table {path} ({type(e).__name__}: {e}); delete it and rerun the rule that writes it"
        ) from e


def markdown_table(df, float_format: str = "%.4f") -> str:
    """A GitHub-flavoured Markdown table of a DataFrame (no extra dependency)."""

    def cell(v) -> str:
        if isinstance(v, float):
            return float_format % v
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
