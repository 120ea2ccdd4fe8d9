"""./with-venv never deletes a folder it did not make (PIXELROBUST_VENV may name one of the user's)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_folder_of_the_users_is_refused_not_deleted(tmp_path):
    mine = tmp_path / "my-env"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    env = {**os.environ, "PIXELROBUST_VENV": str(mine)}
    proc = subprocess.run(
        [str(ROOT / "with-venv"), "true"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert (
        "is not an environment ./with-venv made" in proc.stderr
        and "refusing to delete it" in proc.stderr
    )
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(
        p.name for p in mine.iterdir()
    ) == ["notes.txt"]


def test_openmp_workers_sleep_unless_the_user_chose(tmp_path):
    """with-venv runs commands with OMP_WAIT_POLICY=PASSIVE by default and keeps a value the user set
    (bench/threads: spinning OpenMP workers made 2-thread torch work 1.7-73x slower on a shared CPU)."""
    probe = ["sh", "-c", 'echo "policy=${OMP_WAIT_POLICY:-unset}"']
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for env, expected in ((base, "PASSIVE"), ({**base, "OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE")):
        proc = subprocess.run(
            [str(ROOT / "with-venv"), *probe], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().endswith(f"policy={expected}")
