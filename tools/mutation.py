"""Mutation testing of the core library with mutmut (docs/development.md, "Mutation testing").

    ./with-venv python tools/mutation.py                 # every group below, one worker, then the table
    ./with-venv python tools/mutation.py stats prm       # some groups
    ./with-venv python tools/mutation.py --survivors     # rerun only the mutants that survived last time
    ./with-venv python tools/mutation.py --resume        # run only those an interrupted run left
    ./with-venv python tools/mutation.py --report        # the table (and survivors) of the last runs only

Not part of CI or ``pytest``: it reruns the modules' fast unit tests once per mutant (about 35 minutes
on 2 cores for every group, the first time). Each group runs in its own copy of the checkout,
``mutants/<group>/`` (git-ignored), with ``[tool.mutmut]`` rewritten to the group's source files
and tests: mutmut runs only the tests that reach a mutated function, but a group's tests are its module's
fast unit tests, not the tests on real data (each builds the session's prepared data and models again in
every mutant's test process: seconds per mutant, hours per group). A run tests
every mutant of its group's functions again; ``--survivors`` reruns only those that survived the last run
or that no test reached (e.g. after adding a test). ``mutants/<group>/`` is a normal mutmut directory:
``cd mutants/stats && ./with-venv mutmut show NAME`` prints a mutant's diff.

mutmut does not mutate functions with a decorator other than ``@staticmethod``/``@classmethod`` (for
example ``@torch.inference_mode()``): the one-pixel searches' ``__call__`` is not in the table; the DE's
selection step, which lives there, is checked by hand-made mutants instead (docs/development.md).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "mutants"

# group: (source files, mutant-name globs, pytest selection). The globs are the functions that compute a search,
# a solver step, a defence, a map comparison or a verdict (mutmut names: pixelrobust.<module>.x_<function> or
# pixelrobust.<module>.xǁ<Class>ǁ<method>).
GROUPS = {
    "stats": (["stats"], ["pixelrobust.stats.*"], ["tests/unit/test_stats.py"]),
    "maps": (["maps"], ["pixelrobust.maps.*"], ["tests/unit/test_maps.py"]),
    "map_compare": (
        ["map_compare"],
        [
            f"pixelrobust.map_compare.x_{f}__*"
            for f in (
                "window_dissimilarity",
                "grid_ratio",
                "constraint_window_map",
                "budget_map",
                "change_maps",
                "_spearman",
                "compare_one",
                "check_primary",
                "grid_verdict",
            )
        ],
        [
            "tests/unit/test_map_compare.py",
            "-k",
            "not sliding_window and not disjoint_windows_put and not real_images",
        ],
    ),
    "onepixel": (
        ["onepixel", "vulnerability"],
        [
            f"pixelrobust.onepixel.{f}__*"
            for f in (
                "x__success",
                "xǁDifferentialEvolutionǁ_mutate",
                "xǁDifferentialEvolutionǁ_evaluate",
                "x__first_occurrences",
                "x__allowed_pixels",
                "x__candidates",
                "x_make_palette",
            )
        ]
        # vulnerability.py: the claim rows and their settings (image_claim_stats and the random controls are left
        # out: their tests build whole synthetic studies, seconds per mutant)
        + [f"pixelrobust.vulnerability.x_{f}__*" for f in ("claim_rows", "check_claim_settings")],
        [
            "tests/unit/test_onepixel.py",
            "tests/unit/test_vulnerability.py",
            "tests/unit/test_attacks.py::test_onepixel_misclassifies_exactly_where_the_de_succeeded",
            "-k",
            # the same tests as before the by-module layout (the bf16 DE's and the screened map's tests joined
            # test_onepixel.py later: left out)
            "not resnet20 and not study and not claim_images and not bf16 and not band and not precision and not mutation_partners and not fp32 and not screen and not certain_probability and not random_check and not subnormal",
        ],
    ),
    "prm_defenses": (
        ["prm", "defenses"],
        [
            f"pixelrobust.prm.{f}__*"
            for f in ("x_lattice_mask", "x_nearest_lattice_index", "xǁPRMǁfill", "xǁPRMǁforward")
        ]
        + [
            f"pixelrobust.defenses.{f}__*"
            for f in (
                "x_shift",
                "xǁStochasticPRMǁplan",
                "xǁStochasticPRMǁtransform",
                "xǁRegionBasedǁ_votes",
                "xǁRegionBasedǁforward",
                "xǁPixelDeflectionǁdeflect_batch",
            )
        ],
        [
            "tests/unit/test_defenses.py",
            "tests/unit/test_prm.py",
            "tests/unit/test_gradients.py",
            "tests/unit/test_config.py::test_config_refuses_an_untestable_ordering",
            "-k",
            "not clean_accuracy and not reproducible_under_its_seed and not zero_radius and not deterministic_mode and not "
            "shift_set_settings and not ignores_the_workflow and not models_for_each_protocol and not per_image_draws and not "
            "votes_do_not_depend and not gradient_map and not architecture_map and not pgd and not lambda and not untrained_prm "
            "and not training and not train_prm and not fitted_on",
        ],
    ),
    "ssim_ball": (
        ["ssim_ball"],
        [
            f"pixelrobust.ssim_ball.{f}__*"
            for f in (
                "xǁSSIMBallProblemǁviolations",
                "xǁSSIMBallProblemǁdual_bound",
                "xǁSSIMBallProblemǁcertify",
                "x__window_optimum",
                "xǁSSIMBallProblemǁ_project",
                "x_window_factors",
                "x_window_starts",
                "x_window_index",
            )
        ],
        ["tests/unit/test_ssim_ball.py", "-k", "first_principles or obvious_optimum or synthetic"],
    ),
    # summary.py's verdict functions (P1's claims come from vulnerability.claim_rows, in the onepixel group)
    "summary": (
        ["summary"],
        [
            f"pixelrobust.summary.x_{f}__*"
            for f in ("p2_claims", "p3_defense", "synthesis_findings")
        ],
        [
            "tests/unit/test_map_compare.py",
            "tests/unit/test_defense_eval.py",
            "tests/unit/test_synthesis.py",
            "tests/unit/test_summary.py",
            "-k",
            "not sliding_window and not disjoint_windows_put and not real_images and not pgd_cells and not chunking and not "
            "adaptive_pgd and not bad_cells and not beats_none and not stochastic_prms_draws and not real_adaptive and not "
            "image_maps_on_real and not refuses_maps_of_other and not permutation_null and not front_page",
        ],
    ),
}

# mutmut 3's exit codes (mutmut/stats.py: status_by_exit_code)
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "type check",
    None: "not run",
    -11: "crashed",
    -9: "crashed",
}
COLUMNS = ("killed", "survived", "timeout", "no tests", "not run", "other")


def checkout_files() -> list[str]:
    """The checkout's files: tracked ones and untracked ones git does not ignore (results/, mutants/ … are)."""
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"tools/mutation.py: {ROOT} is not a git checkout (git ls-files: "
            f"{proc.stderr.decode().strip()}); it copies the checkout's files into mutants/<group>/, so "
            "run it from a git clone"
        )
    return [f for f in proc.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


SYNCED = ".mutation-synced"  # in mutants/<group>/: the checkout files copied there by the last sync


def sync(dest: Path) -> None:
    """Copy the checkout into ``dest``, keeping files whose content has not changed (and so mutmut's cache);
    files an earlier sync copied that the checkout no longer has are removed (a stale module could hide an
    import error)."""
    files = checkout_files()
    listed = dest / SYNCED
    before = set(listed.read_text().splitlines()) if listed.exists() else set()
    for rel in sorted(before - set(files)):
        (dest / rel).unlink(missing_ok=True)
    for rel in files:
        src, dst = ROOT / rel, dest / rel
        if dst.exists() and dst.read_bytes() == src.read_bytes():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    listed.write_text("\n".join(files) + "\n")


def check_mutmut(dest: Path, env: dict) -> None:
    """Stop with a named error when ./with-venv's environment has no mutmut."""
    proc = subprocess.run(
        [str(dest / "with-venv"), "python", "-c", "import mutmut"],
        cwd=dest,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(
            "tools/mutation.py: mutmut does not import in ./with-venv's environment "
            f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'exit ' + str(proc.returncode)}). "
            "It is pinned in requirements.lock (mutmut==3.8.1), so the default environment has it; if "
            "PIXELROBUST_VENV points at an environment of your own, install it there: "
            "pip install mutmut==3.8.1"
        )


def configure(dest: Path, modules: list[str], selection: list[str]) -> None:
    """The group's ``[tool.mutmut]``: its source files and its tests (the rest as in pyproject.toml)."""
    p = dest / "pyproject.toml"
    text = p.read_text()
    only = json.dumps([f"src/pixelrobust/{m}.py" for m in modules])
    text, n1 = re.subn(r"(?ms)^only_mutate = \[.*?^\]", lambda _: f"only_mutate = {only}", text)
    text, n2 = re.subn(
        r"(?ms)^pytest_add_cli_args_test_selection = \[.*?^\]",
        lambda _: (
            f"pytest_add_cli_args_test_selection = {json.dumps(selection, ensure_ascii=False)}"
        ),
        text,
    )
    if not (n1 and n2):
        raise SystemExit(
            "tools/mutation.py: pyproject.toml's [tool.mutmut] needs only_mutate and "
            "pytest_add_cli_args_test_selection lists (one item per line, closing ']' on its own line)"
        )
    p.write_text(text)


def results(dest: Path, modules: list[str], globs: list[str]) -> dict[str, dict]:
    out = {}
    for m in modules:
        meta = dest / "mutants" / "src" / "pixelrobust" / f"{m}.py.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        out[m] = {k: v for k, v in codes.items() if any(fnmatch.fnmatchcase(k, g) for g in globs)}
    return out


def table(rows: dict[str, dict]) -> list[str]:
    lines = [
        "| module | mutants | " + " | ".join(COLUMNS) + " | score |",
        "|---|" + "---:|" * (len(COLUMNS) + 2),
    ]
    for module, codes in rows.items():
        counts = Counter(STATUS.get(v, "other") for v in codes.values())
        counts["other"] += sum(v for s, v in counts.items() if s not in COLUMNS)
        tested = counts["killed"] + counts["survived"] + counts["timeout"]
        score = f"{100 * (counts['killed'] + counts['timeout']) / tested:.0f} %" if tested else "-"
        lines.append(
            f"| {module} | {len(codes)} | "
            + " | ".join(str(counts[c]) for c in COLUMNS)
            + f" | {score} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="mutation testing of the core library (mutmut)")
    ap.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(GROUPS)}")
    ap.add_argument(
        "--survivors",
        action="store_true",
        help="rerun only the mutants that survived the last run or had no test (after adding tests)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="run only the mutants not run yet (after an interrupted run)",
    )
    ap.add_argument(
        "--report",
        action="store_true",
        help="print the last runs' table and survivors; run nothing",
    )
    ap.add_argument("--jobs", type=int, default=1, help="mutmut workers (default: %(default)s)")
    args = ap.parse_args(argv)
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        raise SystemExit(
            f"tools/mutation.py: unknown group(s) {', '.join(unknown)}; use any of {', '.join(GROUPS)}"
        )
    env = dict(os.environ)
    env.setdefault("PIXELROBUST_MIRROR", str(ROOT.parent / "shared" / "data"))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # mutmut forks one test process per mutant
    rows, survivors = {}, []
    for group in args.groups or list(GROUPS):
        modules, globs, selection = GROUPS[group]
        dest = WORK / group
        if not args.report:
            dest.mkdir(parents=True, exist_ok=True)
            sync(dest)
            configure(dest, modules, selection)
            check_mutmut(dest, env)
            names = globs
            if args.survivors or args.resume:
                wanted = ("survived", "no tests") if args.survivors else ("not run",)
                names = [
                    k
                    for codes in results(dest, modules, globs).values()
                    for k, v in codes.items()
                    if STATUS.get(v) in wanted
                ]
                if not names:
                    print(f"== {group}: nothing to rerun", flush=True)
                    continue
            print(
                f"== {group}: mutmut run ({len(names)} name patterns) in {dest.relative_to(ROOT)}",
                flush=True,
            )
            start = time.time()
            rc = subprocess.run(
                [
                    "nice",
                    "-n",
                    "10",
                    str(dest / "with-venv"),
                    "mutmut",
                    "run",
                    "--max-children",
                    str(args.jobs),
                    *names,
                ],
                cwd=dest,
                env=env,
            ).returncode
            print(f"== {group}: exit {rc} after {time.time() - start:.0f} s", flush=True)
            if rc:
                return rc
        res = results(dest, modules, globs)
        rows.update(res)
        survivors += sorted(k for codes in res.values() for k, v in codes.items() if v == 0)
    print("\n".join(table(rows)))
    print("\nsurvivors:\n" + ("\n".join(survivors) or "(none)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
