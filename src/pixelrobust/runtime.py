"""Run-time plumbing shared by every job: device choice, seeds, determinism, logging."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import random
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .provenance import from_snakemake

log = logging.getLogger("pixelrobust")


def export_library_path() -> None:
    """Put this package's parent folder on PYTHONPATH so Snakemake script jobs import it too.

    Script jobs inherit the environment; this matters where pixelrobust is not installed in the
    job's interpreter (``--sdm conda``).
    """
    src = str(Path(__file__).resolve().parents[1])
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters (or buffers) live on; CPU for a model with neither."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def resolve_device(preference: str = "auto") -> torch.device:
    """'auto' -> CUDA when visible, else CPU; 'cpu'; 'cuda' or 'cuda:N' (an error if CUDA is absent)."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"config key device is {preference!r} but CUDA is not available on this machine "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            "use device: auto (CUDA when present, else CPU) or device: cpu"
        )
    try:
        dev = torch.device(preference)
    except RuntimeError as e:
        raise ConfigError(
            f"config key device: {preference!r} is not a device ('auto', 'cpu', 'cuda', 'cuda:N')"
        ) from e
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ConfigError(
            f"config key device is {preference!r} but this machine shows {n} CUDA device{'s' if n != 1 else ''} "
            f"(cuda:0{'..cuda:' + str(n - 1) if n > 1 else ''}; CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); pick one of them, or use device: cuda / auto"
        )
    return dev


def derive_seed(base: int, *keys) -> int:
    """A per-job seed from the config seed and the job's wildcards, stable across runs and machines."""
    text = "/".join([str(base), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def job(smk) -> Iterator[torch.device]:
    """Open a workflow job from its script's ``snakemake`` object; every script opens its job this way.

    The convention (docs/development.md, "Layout"): rule ``X`` in ``workflow/rules/<stage>.smk`` runs
    ``workflow/scripts/X.py``, which imports ``X`` from its library module (a figure: ``plot`` from
    ``pixelrobust.figures.X``), opens ``with job(snakemake) as device:`` and makes one call::

        p = snakemake.params
        with job(snakemake) as device:
            onepixel_search(data=..., weights=..., segments=..., out=dict(snakemake.output.items()),
                            spec=p.spec, bounds=p.bounds, ..., seed=p.seed, device=device)

    Every entry point takes keywords only: each of the rule's named inputs under its name (a path, or a
    list of paths; inputs keyed by model as one mapping), its outputs as one
    mapping ``out`` keyed like the rule's named outputs (an unnamed output under its file type, ``csv`` or
    ``npz``; ``prov`` is this function's), each param it reads under its name, wildcards it needs under
    theirs, and ``device``, the device this function picked, where the rule has a ``device`` param (the
    details and the one exception, ``train_prm``'s ``train_cfg``: docs/development.md, "Layout";
    checked by tests/workflow/test_scripts.py).

    What it does: log to ``smk.log[0]`` (and stderr). A compute job, a rule with a ``device`` param (and
    so ``seed`` and ``threads``), is seeded with ``params.seed``, runs ``smk.threads`` torch threads on
    ``params.device`` (:func:`resolve_device`); any other job (downloads, tables, figures) is seeded with 0
    on the default thread count and device 'auto'. Any exception is written to the log with its traceback
    and re-raised, so Snakemake marks the job failed and removes its outputs. When the job succeeds and
    the rule has a ``prov`` output, its provenance record is written there
    (:func:`pixelrobust.provenance.from_snakemake`; seed, device and threads for a compute job only).
    """
    params = dict(smk.params.items())
    compute = "device" in params
    log_path = smk.log[0] if len(smk.log) else None
    seed = params["seed"] if compute else 0
    threads = smk.threads if compute else None
    device = params["device"] if compute else "auto"
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )
    try:
        if threads:
            torch.set_num_threads(int(threads))
        seed_everything(seed)
        dev = resolve_device(device)
        log.info(
            "device %s, threads %d, seed %d, torch %s, OMP_WAIT_POLICY %s",
            dev,
            torch.get_num_threads(),
            seed,
            torch.__version__,
            os.environ.get("OMP_WAIT_POLICY", "unset"),  # workflow/Snakefile: PASSIVE by default
        )
        if "SLURM_JOB_ID" in os.environ:  # on a cluster (tests/workflow/test_slurm.py)
            log.info(
                "SLURM_JOB_ID=%s CUDA_VISIBLE_DEVICES=%s",
                os.environ["SLURM_JOB_ID"],
                os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            )
        yield dev
        from_snakemake(
            smk,
            seed if compute else None,
            dev if compute else None,
            torch.get_num_threads() if compute else None,
        )
    except BaseException:
        log.error("job failed:\n%s", traceback.format_exc())
        raise
    finally:
        for h in handlers:
            h.flush()
