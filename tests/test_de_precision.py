"""The bf16 DE (``DifferentialEvolution(precision="bf16")``): bf16 ranks, fp32 decides success.

The models here are planted: their logits under bf16 autocast differ from their fp32 logits by a
known rule, so what fp32 must confirm, and what the band must catch, follows from the rule. The
low-precision path is forced (``de.low = torch.bfloat16``): bf16 autocast runs on any CPU (slowly
where it is emulated), so these tests do not depend on the machine having native bf16.
"""

from __future__ import annotations

import math

import pytest
import torch

from pixelrobust.errors import ConfigError
from pixelrobust.onepixel import DifferentialEvolution


class Disagree(torch.nn.Module):
    """Two classes; the logits read the red value r of the image's pixel (0, 0).

    fp32: z = [r + fp32_shift, 0.5]; under CPU autocast: z = [r + low_shift, 0.5]. Label 0, so a
    candidate succeeds in a precision when r + shift < 0.5. Records the red values it sees in each
    precision."""

    def __init__(self, fp32_shift: float, low_shift: float):
        super().__init__()
        self.anchor = torch.nn.Parameter(
            torch.zeros(1), requires_grad=False
        )  # puts the model on a device
        self.shift = {False: fp32_shift, True: low_shift}
        self.seen = {False: [], True: []}

    def forward(self, x):
        low = torch.is_autocast_enabled("cpu")
        r = x[:, 0, 0, 0].float()
        self.seen[low].append(r.clone())
        return torch.stack([r + self.shift[low], torch.full_like(r, 0.5)], 1)

    def red(self, low: bool) -> torch.Tensor:
        return torch.cat(self.seen[low]) if self.seen[low] else torch.empty(0)


def bf16_de(model, **kw) -> DifferentialEvolution:
    de = DifferentialEvolution(model, precision="bf16", **kw)
    de.low = torch.bfloat16  # forced: the path under test, whatever this CPU supports
    return de


def one_pixel_image(n=1):
    return torch.full((n, 3, 1, 1), 0.9), torch.zeros(n, dtype=torch.long)


def test_a_bf16_success_that_fp32_refuses_is_never_reported():
    # bf16 calls every candidate a success (r - 1 < 0.5 for every r in [0, 1]); fp32 none (r + 1 > 0.5)
    model = Disagree(fp32_shift=1.0, low_shift=-1.0)
    x, y = one_pixel_image(2)
    popsize, maxiter = 8, 3
    res = bf16_de(model, popsize=popsize, maxiter=maxiter, seed=0)(x, y)
    for r in res:
        assert not r.success and r.generations == maxiter and r.precision == "bf16"
        assert r.n_evals == popsize * (maxiter + 1)
        # every candidate was a bf16 "success", so every one went to fp32 and was rejected there
        assert r.rejected == r.n_evals and r.n_fp32 == r.n_evals and r.band_hits == 0
        # the reported probability is fp32's: softmax of [r + 1, 0.5] at the reported colour
        assert r.p_true == pytest.approx(
            1 / (1 + math.exp(0.5 - (float(r.colour[0]) + 1))), rel=1e-6
        )
    assert len(model.red(False)) == len(model.red(True)) == 2 * popsize * (maxiter + 1)


def test_the_band_sends_near_misses_to_fp32_and_they_are_reported():
    # bf16 is off by +0.05 on every candidate: distance to success r - 0.5 in fp32, r - 0.45 in bf16.
    # A random check shows the error 0.05, so the band (2 x 0.05) re-evaluates every candidate with
    # r - 0.45 <= 0.1 (r <= 0.55); those with 0.45 <= r < 0.5 are fp32 successes bf16 missed.
    model = Disagree(fp32_shift=0.0, low_shift=0.05)
    x, y = one_pixel_image()
    popsize = 200
    (r,) = bf16_de(model, popsize=popsize, maxiter=0, seed=3, check=1)(x, y)
    low, f32 = model.red(True), model.red(False)
    assert len(low) == popsize
    missed = ((low >= 0.45 + 1e-6) & (low < 0.5)).sum().item()
    assert missed >= 1, "the planted population must hold a near miss (pick another seed)"
    assert r.band_hits == ((low >= 0.45) & (low < 0.5)).sum().item()
    assert r.success and r.generations == 0 and r.rejected == 0
    assert float(r.colour[0]) < 0.5  # an fp32 success: r < 0.5
    # fp32 saw every candidate within the band, at most `check` (1) outside it, nothing else
    inside = (low <= 0.55 - 1e-6).sum().item()
    outside = (low > 0.55 + 1e-6).sum().item()
    assert inside <= r.n_fp32 <= inside + 1 + (popsize - inside - outside)
    assert (f32 > 0.55 + 1e-6).sum().item() <= 1
    assert r.n_fp32 == len(f32)


def test_without_low_precision_the_fp32_path_runs_and_counts_every_candidate():
    model = Disagree(fp32_shift=1.0, low_shift=-1.0)
    x, y = one_pixel_image()
    de = DifferentialEvolution(model, popsize=6, maxiter=2, seed=0, precision="bf16")
    de.low = None  # what a CPU without native bf16 (or CUDA) gets
    (r,) = de(x, y)
    assert (
        r.precision == "fp32" and not r.success and r.n_fp32 == r.n_evals == 18 and r.rejected == 0
    )
    assert len(model.red(True)) == 0
    assert "fp32" in de.describe() and "bf16" in de.describe()


def test_bf16_de_is_deterministic_under_its_seed():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 3),
    ).eval()
    x = torch.rand(2, 3, 6, 6)
    with torch.no_grad():
        y = net(x).argmax(1)

    class Recorder(
        torch.nn.Module
    ):  # keeps the candidates evaluated in fp32 (the checks and the band's)
        def __init__(self):
            super().__init__()
            self.net, self.fp32 = net, []

        def forward(self, z):
            if not torch.is_autocast_enabled("cpu"):
                self.fp32.append(z.clone())
            return self.net(z)

    def run(seed):
        torch.rand(17)  # the global random stream must not matter
        rec = Recorder()
        res = bf16_de(rec, popsize=12, maxiter=4, seed=seed)(x, y)
        return [
            (r.success, r.pixel, r.colour.tolist(), r.p_true, r.n_evals, r.n_fp32, r.band_hits)
            for r in res
        ], torch.cat(rec.fp32)

    (a, fa), (b, fb), (c, _) = run(5), run(5), run(6)
    assert a == b and torch.equal(fa, fb)
    assert a != c


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"precision": "fp16"}, "onepixel.de.precision"),
        ({"band": 0.5}, "band"),
        ({"check": 0}, "fp32 check"),
    ],
)
def test_bad_precision_settings_are_refused(kw, key):
    with pytest.raises(ConfigError, match=key):
        DifferentialEvolution(Disagree(0, 0), popsize=4, maxiter=1, **kw)


def test_mutation_partners_are_the_first_three_of_a_random_permutation():
    # the partners of member m: the first three of a random permutation of the other members, drawn
    # as argsort of P - 1 uniform keys (the definition; the code takes the three smallest keys)
    n, P, F = 2, 9, 0.1
    pop = (
        torch.rand(n, P, 4, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    )  # mutants stay in bounds
    k = torch.full((n,), 1.0)
    de = DifferentialEvolution(Disagree(0, 0), popsize=P, maxiter=1, F=F)
    got = de._mutate(pop, k, torch.Generator().manual_seed(7))
    keys = torch.rand(n, P, P - 1, generator=torch.Generator().manual_seed(7))
    for i in range(n):
        for m in range(P):
            others = [j for j in range(P) if j != m]
            a, b, c = (others[int(t)] for t in keys[i, m].argsort()[:3])
            assert torch.allclose(
                got[i, m], pop[i, a] + F * (pop[i, b] - pop[i, c]), atol=0, rtol=0
            )


def test_bf16_de_on_real_images_reports_only_fp32_adversarial_pixels(resnet20, prepared):
    from pixelrobust import data

    split = data.load_split(prepared / "data" / "cifar10", "test", 0, 6)
    x, y = split.images, split.labels
    de = bf16_de(resnet20, popsize=40, maxiter=4, seed=0, batch_size=128)
    res = de(x, y)
    for i, r in enumerate(res):
        assert r.precision == "bf16" and 0 < r.n_fp32 <= r.n_evals + 1
        adv = x[i].clone()
        adv[:, r.pixel[0], r.pixel[1]] = torch.from_numpy(r.colour)
        with torch.no_grad():
            p = resnet20(adv[None]).softmax(1)[0]  # plain fp32
        assert (p.argmax().item() != y[i].item()) == r.success
        assert r.p_true == pytest.approx(p[y[i]].item(), rel=1e-4, abs=1e-6)  # the fp32 probability
