"""The NQM against independent references: a per-step recursion written here, Monte Carlo
simulation of the stochastic model, brute-force step scans, and the seed's qualitative findings
as numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm import NQM, fit_critical_batch, parse_optimizer
from tune_batchdyn.nqm.dynamics import _INIT_AND_READOUT

# -- an independent reference: the per-step second-moment recursion with explicit matrices ------


def reference_matrices(kind: str, a: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """One step ``z' = M z + u eta`` written from the update rules (seed eqs. 2, 5, 11)."""
    if kind == "sgd":
        return np.array([[1.0 - a, 0.0], [0.0, 0.0]]), np.array([1.0, 0.0])
    if kind == "momentum":  # v' = beta v - lr g; x' = x + v'
        return np.array([[1.0 - a, beta], [-a, beta]]), np.array([1.0, 1.0])
    # ema: x' = x - lr g; x_bar' = beta x_bar + (1 - beta) x'
    return (np.array([[1.0 - a, 0.0], [(1.0 - beta) * (1.0 - a), beta]]),
            np.array([1.0, 1.0 - beta]))


def reference_risk(model: NQM, optimizer: str, lrs: list[float], lengths: list[int],
                   batch: float, beta: float = 0.0) -> float:
    """Risk after a piecewise-constant schedule, one step at a time, one dimension at a time."""
    spec = parse_optimizer(optimizer)
    problem = model.problem
    (w, e) = (np.array(v) for v in _INIT_AND_READOUT[spec.kind])
    total = 0.0
    for h, c, count in zip(problem.curvature, problem.noise, problem.count, strict=True):
        h_tilde = h ** (1.0 - spec.precond_power)
        n = c * h ** (-2.0 * spec.precond_power)
        second = problem.x0_var * np.outer(w, w)
        for lr, length in zip(lrs, lengths, strict=True):
            m, u = reference_matrices(spec.kind, lr * h_tilde, beta)
            for _ in range(length):
                second = m @ second @ m.T + lr**2 * n / batch * np.outer(u, u)
        total += count * h / 2.0 * (e @ second @ e)
    return total


SMALL = NQM(dim=12, spectrum="1/i", noise="C=H", bins=None)


@pytest.mark.parametrize(
    ("optimizer", "beta"),
    [("sgd", 0.0), ("precond:0.5", 0.0), ("momentum", 0.9), ("momentum", 0.3), ("ema", 0.95),
     ("momentum+precond:0.5", 0.8), ("ema+precond:0.25", 0.5)],
)
def test_expected_risk_equals_the_step_by_step_recursion(optimizer, beta):
    lrs = [0.05, 0.4, 1.3]
    steps = [1, 7, 64, 301]
    got = SMALL.expected_risk(steps, lrs, batch_size=3.0, optimizer=optimizer, coefficient=beta)
    for i, t in enumerate(steps):
        for j, lr in enumerate(lrs):
            want = reference_risk(SMALL, optimizer, [lr], [t], 3.0, beta)
            assert got[i, j] == pytest.approx(want, rel=1e-9)


def test_sgd_closed_form_matches_design_formula():
    model = NQM(dim=30, spectrum="1/i^1.5", noise="C=I", bins=None, x0_var=2.0)
    h, c = model.problem.curvature, model.problem.noise
    lr, batch, t = 0.7, 5.0, 123
    r = 1.0 - lr * h
    want = np.sum(r ** (2 * t) * 2.0 * h / 2
                  + lr * c / (2 * batch * (2 - lr * h)) * (1 - r ** (2 * t)))
    assert model.expected_risk(t, lr, batch) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(("optimizer", "beta"), [("sgd", 0.0), ("momentum", 0.9), ("ema", 0.9)])
def test_schedule_risk_equals_the_step_by_step_recursion(optimizer, beta):
    lrs, lengths = [1.0, 0.3, 0.05], [5, 40, 17]
    got = SMALL.schedule_risk(lrs, lengths, batch_size=2.0, optimizer=optimizer,
                              coefficient=beta)
    assert got == pytest.approx(reference_risk(SMALL, optimizer, lrs, lengths, 2.0, beta),
                                rel=1e-9)
    many = SMALL.schedule_risk([lrs, lrs[::-1]], lengths, 2.0, optimizer, beta)
    assert many[0] == pytest.approx(got, rel=1e-12)


def test_constant_schedule_equals_constant_lr():
    got = SMALL.schedule_risk([0.2] * 4, 25, batch_size=8.0)
    assert got == pytest.approx(SMALL.expected_risk(100, 0.2, 8.0), rel=1e-12)


# -- Monte Carlo: sample the stochastic model itself -----------------------------------------


def simulate_risk(model: NQM, optimizer: str, lr: float, beta: float, batch: int,
                  checkpoints: list[int], runs: int, seed: int) -> np.ndarray:
    """Mean and standard error of the risk over ``runs`` sampled runs at ``checkpoints``.

    Each step draws ``batch`` per-sample gradients ``h x + sqrt(c) * s`` with Rademacher ``s``
    (not Gaussian: the expectation only needs zero mean and unit variance) and averages them.
    """
    spec = parse_optimizer(optimizer)
    rng = np.random.default_rng(seed)
    h, c = model.problem.curvature, model.problem.noise
    precond = h ** (-spec.precond_power)
    x = rng.standard_normal((runs, h.size)) * np.sqrt(model.problem.x0_var)
    v = np.zeros_like(x)
    average = x.copy()
    out = []
    for t in range(1, max(checkpoints) + 1):
        signs = rng.integers(0, 2, size=(batch, runs, h.size)) * 2.0 - 1.0
        gradient = h * x + np.sqrt(c) * signs.mean(axis=0)
        step = lr * precond * gradient
        if spec.kind == "momentum":
            v = beta * v - step
            x = x + v
        else:
            x = x - step
            average = beta * average + (1.0 - beta) * x
        if t in checkpoints:
            evaluated = average if spec.kind == "ema" else x
            risk = 0.5 * (evaluated**2 @ h)
            out.append((risk.mean(), risk.std(ddof=1) / np.sqrt(runs)))
    return np.array(out)


@pytest.mark.parametrize(
    ("optimizer", "lr", "beta"),
    [("sgd", 0.5, 0.0), ("precond:0.5", 0.3, 0.0), ("momentum", 0.2, 0.8), ("ema", 0.6, 0.9)],
)
def test_closed_form_agrees_with_monte_carlo(optimizer, lr, beta):
    model = NQM(dim=6, spectrum="1/i", noise="C=H", bins=None)
    checkpoints = [3, 20, 80]
    simulated = simulate_risk(model, optimizer, lr, beta, batch=2, checkpoints=checkpoints,
                              runs=10_000, seed=7)
    exact = model.expected_risk(checkpoints, lr, 2.0, optimizer, beta)[:, 0]
    z_scores = (simulated[:, 0] - exact) / simulated[:, 1]
    assert np.all(np.abs(z_scores) < 4.0), z_scores


# -- steps to target against a brute-force scan ------------------------------------------------


def brute_force_steps(model: NQM, optimizer: str, lrs: np.ndarray, betas: np.ndarray,
                      batch: float, target: float, horizon: int) -> tuple[int, float]:
    """First step at which any grid point's risk is <= target, scanning every step of the
    per-step recursion (all grid points and dimensions at once, explicit 2x2 matrices)."""
    spec = parse_optimizer(optimizer)
    problem = model.problem
    h_tilde = problem.curvature ** (1.0 - spec.precond_power)
    n = problem.noise * problem.curvature ** (-2.0 * spec.precond_power)
    grid = [(lr, beta) for beta in betas for lr in lrs]
    step = np.array([[reference_matrices(spec.kind, lr * h, beta)[0] for h in h_tilde]
                     for lr, beta in grid])
    direction = np.array([[reference_matrices(spec.kind, lr * h, beta)[1] for h in h_tilde]
                          for lr, beta in grid])
    noise = (np.array([lr for lr, _ in grid])[:, None] ** 2 * n / batch)[..., None, None]
    kick = noise * direction[..., :, None] * direction[..., None, :]
    w, e = (np.array(v) for v in _INIT_AND_READOUT[spec.kind])
    second = np.broadcast_to(problem.x0_var * np.outer(w, w), step.shape).copy()
    weight = problem.count * problem.curvature / 2.0
    for t in range(1, horizon + 1):
        second = step @ second @ np.swapaxes(step, -1, -2) + kick
        risk = (second @ e @ e) @ weight
        if np.any(risk <= target):
            return t, grid[int(np.argmin(risk))][0]
    return horizon + 1, np.nan


@pytest.mark.parametrize(
    ("optimizer", "betas"),
    [("sgd", [0.0]), ("precond:0.5", [0.0]), ("momentum", [0.5, 0.8, 0.9]),
     ("ema", [0.0, 0.9, 0.99])],
)
def test_steps_to_target_equals_a_brute_force_scan(optimizer, betas):
    model = NQM(dim=20, spectrum="1/i", noise="C=H", bins=None)
    lrs = np.geomspace(0.01, 1.0, 9)
    for batch in (1.0, 16.0):
        got = model.steps_to_target(batch, optimizer, target=0.08, lr_grid=lrs,
                                    coefficient_grid=betas)
        want = brute_force_steps(model, optimizer, lrs, np.array(betas), batch, 0.08, 3000)
        assert got[0] == want[0]
        assert got[1] == pytest.approx(want[1])


def test_unreachable_target_and_zero_steps():
    model = NQM(dim=20, bins=None)
    steps, lr = model.steps_to_target(1, target=1e-3, lr_grid=[1.0], max_steps=1000)
    assert steps == np.inf and np.isnan(lr)
    steps, lr = model.steps_to_target(1, target=10.0)
    assert steps == 0 and np.isnan(lr)


def test_lower_bound_is_zero_when_the_start_meets_the_target():
    model = NQM(dim=100)
    initial = model.problem.initial_risk()
    assert np.all(model.lower_bound_steps([1, 8, 1024], target=100.0) == 0.0)
    assert np.all(model.lower_bound_steps([1, 8], target=initial) == 0.0)
    assert np.all(model.lower_bound_steps([1, 8], target=0.99 * initial) > 0.0)
    curve = model.steps_curve([1, 8], "sgd", target=100.0, lr_points=5)
    assert np.all(curve.steps == 0.0) and np.all(curve.lower_bound == 0.0)


# -- the seed's findings, on the seed's model -----------------------------------------------


@pytest.fixture(scope="module")
def curves():
    model = NQM()
    names = ("sgd", "momentum", "precond:0.25", "precond:0.5", "ema")
    return {name: model.steps_curve(optimizer=name) for name in names}


def test_perfect_scaling_then_plateau(curves):
    for name in ("sgd", "momentum", "precond:0.5"):
        curve = curves[name]
        b_crit = curve.critical_batch().b_crit
        ratio = curve.steps[:-1] / curve.steps[1:]  # S(B) / S(2B)
        small = curve.batch_sizes[:-1] <= b_crit / 8
        large = curve.batch_sizes[:-1] >= 8 * b_crit
        assert small.sum() >= 4
        assert np.all(np.abs(ratio[small] - 2.0) <= 0.2), (name, ratio[small])
        if large.any():
            assert np.all(ratio[large] <= 1.1), (name, ratio[large])
    sgd = curves["sgd"]
    assert sgd.steps[-1] / sgd.steps[-5] > 0.85  # flat over the last 16x of batch size


def test_momentum_and_preconditioning_raise_the_critical_batch(curves):
    b_crit = {name: curve.critical_batch().b_crit for name, curve in curves.items()}
    assert b_crit["momentum"] > 4 * b_crit["sgd"]
    assert b_crit["precond:0.5"] > 2 * b_crit["precond:0.25"] > 4 * b_crit["sgd"]
    sgd, momentum = curves["sgd"], curves["momentum"]
    # at small batch momentum only matches SGD (within the grids' resolution) ...
    assert np.all(np.abs(momentum.steps[:3] / sgd.steps[:3] - 1.0) < 0.15)
    # ... with an effective lr lr/(1-beta) equal to SGD's optimal lr
    assert np.all(np.abs(np.log(momentum.effective_lr[:5] / sgd.best_lr[:5])) < np.log(1.5))
    # preconditioning helps even at batch size 1
    assert curves["precond:0.5"].steps[0] < 0.5 * sgd.steps[0]


def test_ema_helps_at_small_batch_only(curves):
    ema, sgd = curves["ema"], curves["sgd"]
    assert ema.steps[0] < 0.5 * sgd.steps[0]
    assert abs(ema.steps[-1] / sgd.steps[-1] - 1.0) < 0.05
    assert ema.critical_batch().b_crit < sgd.critical_batch().b_crit


def test_optimal_lr_grows_linearly_below_the_critical_batch(curves):
    for name in ("sgd", "precond:0.5"):
        curve = curves[name]
        small = curve.batch_sizes <= curve.critical_batch().b_crit / 8
        slope = np.polyfit(np.log(curve.batch_sizes[small]), np.log(curve.best_lr[small]), 1)[0]
        assert abs(slope - 1.0) < 0.1, (name, slope)


def test_lower_bound_is_below_every_optimiser(curves):
    for curve in curves.values():
        assert np.all(curve.lower_bound < curve.steps)
        # C = H: the bound is d / (2 target B)
        np.testing.assert_allclose(curve.lower_bound, 10_000 / (2 * 0.01 * curve.batch_sizes))


# -- fitting, binning, settings ------------------------------------------------------------------


def test_critical_batch_fit_recovers_known_parameters():
    batches = 2.0 ** np.arange(12)
    fit = fit_critical_batch(batches, 300.0 * (1 + 50.0 / batches))
    assert fit.success
    assert fit.b_crit == pytest.approx(50.0, rel=1e-6)
    assert fit.s_min == pytest.approx(300.0, rel=1e-6)
    assert not fit_critical_batch([1, 2], [10, 5]).success


def test_binning_approximates_the_exact_spectrum():
    exact = NQM(dim=2000, bins=None)
    binned = NQM(dim=2000, bins=100)
    assert binned.problem.dim == 2000
    assert binned.problem.initial_risk() == pytest.approx(exact.problem.initial_risk())
    for batch in (4, 256):
        ratio = binned.steps_to_target(batch)[0] / exact.steps_to_target(batch)[0]
        assert abs(ratio - 1.0) < 0.03


def test_other_spectra_and_noise():
    model = NQM(dim=500, spectrum="1/i^2", noise="C=I", bins=40)
    c_over_h = np.sum(np.arange(1, 501) ** 2.0)
    np.testing.assert_allclose(model.lower_bound_steps([1], 0.01), c_over_h / 0.02, rtol=0.05)
    explicit = NQM(dim=3, spectrum=[1.0, 0.5, 0.1], noise=[0.2, 0.0, 1.0], bins=None)
    assert np.isfinite(explicit.steps_to_target(4, target=0.05)[0])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"dim": 0}, "dim"), ({"bins": 0}, "bins"), ({"x0_var": -1.0}, "x0_var"),
     ({"spectrum": "exp"}, "spectrum"), ({"noise": "C=2H"}, "noise"),
     ({"dim": 2, "spectrum": [1.0, -1.0]}, "spectrum"), ({"dim": 2, "noise": [1.0]}, "noise")],
)
def test_bad_settings_raise_config_error(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        NQM(**kwargs)


@pytest.mark.parametrize("text", ["adam", "precond", "precond:2", "precond:x", "sgd+momentum",
                                  "momentum+ema", "ema+precond:0.5+precond:0.5", ""])
def test_bad_optimizer_strings_name_the_accepted_values(text):
    with pytest.raises(ConfigError, match="optimizer") as info:
        SMALL.steps_to_target(4, optimizer=text)
    assert "precond" in str(info.value)


def test_optimizer_strings():
    assert parse_optimizer("sgd").label == "sgd"
    assert parse_optimizer("precond:0.5").precond_power == 0.5
    assert parse_optimizer("EMA + precond:0.25").label == "ema+precond:0.25"
    assert parse_optimizer("momentum").has_coefficient


@pytest.mark.parametrize(
    ("call", "field"),
    [(lambda: SMALL.steps_to_target(0), "batch_size"),
     (lambda: SMALL.steps_to_target(4, target=-1.0), "target"),
     (lambda: SMALL.steps_to_target(4, "momentum", coefficient_grid=[1.5]), "coefficient"),
     (lambda: SMALL.steps_to_target(4, lr_grid=[-0.1]), "lr"),
     (lambda: SMALL.steps_to_target(4, lr_points=0), "lr_points"),
     (lambda: SMALL.expected_risk(-1, 0.1, 1), "steps"),
     (lambda: SMALL.expected_risk(3, 0.1, 1, "sgd", 0.5), "coefficient")],
)
def test_bad_arguments_raise_config_error(call, field):
    with pytest.raises(ConfigError, match=field):
        call()
