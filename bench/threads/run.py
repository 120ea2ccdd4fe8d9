"""Benchmark: OpenMP's wait policy on a CPU that other processes also use.

    ./with-venv python bench/threads/run.py [--load 2] [--rounds 3] [--threads 2]

PyTorch's CPU kernels run on GNU OpenMP. Between two parallel regions its worker threads spin
(busy-wait) for a while before they sleep (``OMP_WAIT_POLICY`` unset: about 300 000 spins;
``ACTIVE``: practically forever; ``PASSIVE``: they sleep at once). When every core is busy with
other work (a second job, another user, the test suite beside a run) a spinning worker holds a core
that the thread it waits for needs, and each of the hundreds of small parallel regions of a forward
pass can wait for a whole scheduler time slice. The workflow's jobs run with ``threads`` = the
cores they were given, so this is the case on any machine that is not otherwise idle.

Each workload runs in a fresh interpreter (the policy is read when OpenMP starts) with
``--threads`` threads, under each policy, the policies alternating within each of ``--rounds``
rounds (the order reversed every other round), first with no competing load of ours and then
beside ``--load`` busy processes (pure Python loops, one core each: the stand-in for another job).
The measured rows of bench/README.md ran before the order alternated (unset first in each round).
Workloads:

* ``masked_pgd_mobilenet_v2``: 4 L-inf PGD attacks (3 steps, 2 ImageNet images at 224, a pixel
  mask), the kernel of masked PGD, the defence table's PGD and the SSIM study's baselines;
* ``forward_resnet20_b256``: 20 ResNet-20 forward passes of 256 CIFAR images (one-pixel maps, DE);
* ``forward_mobilenet_v2_b64``: 4 MobileNetV2 forward passes of 64 images at 224.

Writes ``results/benchmarks/threads.csv`` (+ ``.md``): one row per workload, load and policy with
the median wall and process-CPU seconds over the rounds, the machine's 1-minute load average when
the row's last round started, and ``wall_over_passive`` (the policy's wall time over PASSIVE's in
the same condition). Random weights (the cost of a forward pass does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from pixelrobust.io import write_table  # noqa: E402

POLICIES = ("unset", "PASSIVE", "ACTIVE")

WORKLOAD = r"""
import sys, time, torch, torchvision
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[2]))
name = sys.argv[1]
if name == "masked_pgd_mobilenet_v2":
    net = torchvision.models.mobilenet_v2().eval().to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    x, y = torch.rand(2, 3, 224, 224), torch.tensor([1, 2])
    mask = torch.zeros(224, 224); mask[:50] = 1
    def work():
        for _ in range(4):
            adv = (x + (torch.rand_like(x) * 2 - 1) * 8 / 255 * mask).clamp(0, 1)
            for _ in range(3):
                adv.requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(net(adv), y)
                g, = torch.autograd.grad(loss, adv)
                adv = (adv.detach() + 2 / 255 * g.sign() * mask).clamp(0, 1)
elif name == "forward_resnet20_b256":
    sys.path.insert(0, sys.argv[3])
    from pixelrobust.models import CifarResNet
    net = CifarResNet(20, 10).eval().to(memory_format=torch.channels_last)
    x = torch.rand(256, 3, 32, 32)
    def work():
        with torch.inference_mode():
            for _ in range(20):
                net(x)
else:
    net = torchvision.models.mobilenet_v2().eval().to(memory_format=torch.channels_last)
    x = torch.rand(64, 3, 224, 224)
    def work():
        with torch.inference_mode():
            for _ in range(4):
                net(x)
work()  # warm-up
w, c = time.perf_counter(), time.process_time()
work()
print(time.perf_counter() - w, time.process_time() - c)
"""

WORKLOADS = ("masked_pgd_mobilenet_v2", "forward_resnet20_b256", "forward_mobilenet_v2_b64")


def run_once(workload: str, policy: str, threads: int) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    proc = subprocess.run(
        [sys.executable, "-c", WORKLOAD, workload, str(threads), str(REPO / "src")],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"{workload} under {policy} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    out = proc.stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=int, default=2, help="busy processes beside the workload")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policies", default="unset,PASSIVE", help=f"comma-separated, of {POLICIES}")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "threads.csv"))
    args = ap.parse_args()
    policies = args.policies.split(",")
    if unknown := set(policies) - set(POLICIES):
        raise SystemExit(f"--policies: unknown {sorted(unknown)}; known: {POLICIES}")
    rows = []
    for load in sorted({0, args.load}):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
        try:
            time.sleep(1 if load else 0)
            for workload in args.workloads.split(","):
                times = {p: [] for p in policies}
                for r in range(args.rounds):
                    load_avg = os.getloadavg()[0]
                    for policy in policies if r % 2 == 0 else policies[::-1]:  # ABBA order
                        times[policy].append(run_once(workload, policy, args.threads))
                        print(workload, f"load {load}", policy, times[policy][-1], flush=True)
                for policy in policies:
                    rows.append(
                        {
                            "workload": workload,
                            "competing_processes": load,
                            "policy": policy,
                            "threads": args.threads,
                            "wall_s": statistics.median(t[0] for t in times[policy]),
                            "cpu_s": statistics.median(t[1] for t in times[policy]),
                            "rounds": args.rounds,
                            "load_average_1min": load_avg,
                        }
                    )
        finally:
            for p in busy:
                p.kill()
    table = pd.DataFrame(rows)
    passive = table[table.policy == "PASSIVE"].set_index(["workload", "competing_processes"])
    if len(passive):
        table["wall_over_passive"] = [
            r.wall_s / passive.loc[(r.workload, r.competing_processes), "wall_s"]
            for r in table.itertuples()
        ]
    out = Path(args.out)
    write_table(table, out, out.with_suffix(".md"), float_format="%.3f")
    print(table.to_string())


if __name__ == "__main__":
    main()
