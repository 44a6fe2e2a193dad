"""HyDRA's lightweight performance model and its budgeted search -- numpy and stdlib only.

Part of the torch-free core, so that a phone (or any process without autograd) can use it: read the fitted model from the bundle's rank
schedule (``RankSchedule.performance_model``, a dict of a few dozen numbers) and re-allocate
ranks from its own gradient statistics with :func:`propose_allocation`.

Model ("sensitivity-weighted log-rank utility", ours; the HyDRA paper does not publish one).
An *allocation unit* ``i`` is one rank slot of one adapted module (``"path::slot"``). With
``r_i`` its rank, ``s_i`` its gradient signal (RMS gradient of its active rank columns, a
Fisher-style sensitivity) normalised to mean 1 over all units, and ``d_i`` its relative depth
in its tower (-0.5 first layer .. +0.5 last), the features of a configuration are, per group
``g`` (tower x block: vision attn/mlp, projector, language attn/mlp)::

    phi_g = sum_{i in g} s_i * log(1 + r_i) / Z          Z = sum_i s_i * log(1 + r_max_i)
    phi_depth = sum_i s_i * d_i * log(1 + r_i) / Z

and the predicted validation loss is ``b + w . phi``. Fitting (ridge with a prior): a single
shared slope ``a`` is fitted first (``y ~ b + a * sum_g phi_g``: every group equally useful), then
ridge-regularised per-feature corrections ``w = a + delta`` (``||delta||^2`` penalised), so a few
probe runs can only move the model away from "rank goes where the gradients are" as far as the
data supports; the ridge strength is chosen by leave-one-out error over the probes, "prior only"
(infinite ridge) included. Each unit's marginal utility of one more rank is then
``u_i * (log(2 + r) - log(1 + r))`` with ``u_i = -(w_g(i) + w_depth * d_i) * s_i`` (a loss
decrease), and the allocation maximises the summed utility under the budget greedily (utility
per parameter; concave gains make greedy optimal up to one rank).

A second kind, ``hydra-rank/spectral-ridge`` (:func:`fit_spectral_model`), reads each unit's
gradient spectrum instead of one signal: ``sigma_ik^2``, the squared singular values of the unit's
up-projection gradient summed over a few batches with every rank column open
(:func:`~mobile_peft.core.realloc.gradient_spectrum`; with random ``down`` rows that gradient is a
random sketch of the frozen weight's gradient). The first-order loss decrease a rank-``r`` update
can buy is about ``sum_{k<=r} sigma_k^2``, concave in ``r``, so the features are the shares of
gradient energy a configuration captures per group and the fit and the greedy search are the same
as above (the marginal gain of rank ``r + 1`` is ``-w_g * sigma_{r+1}^2 / Z``). Measured out of
sample on the ``tiny`` rank setup (:mod:`mobile_peft.bench.perf_model`, 3 tasks x 3 seeds, 6
probes fitted, 10 held-out configurations) it ranks them no better than the log-rank model
(Spearman LoRA +0.46 vs +0.45, Hydra +0.63 vs +0.67; benchmarks/results/perf_model.md), so
``hydra-rank`` keeps the log-rank model by default; ``hydra-rank`` with ``model="spectral"`` plans
with this one (and measures the spectra again at each re-allocation point), measured no better on
LoRA and far worse on Hydra adapters (benchmarks/README.md). On-device re-allocation reads log-rank
models only (its per-step signals are RMS values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .schedule import BUDGET_TOLERANCE
from .units import module_place, split_unit

__all__ = [
    "FEATURES",
    "GROUPS",
    "MODEL_KIND",
    "SPECTRAL_KIND",
    "SPECTRAL_VERSION",
    "check_model",
    "features",
    "fit_performance_model",
    "fit_ridge_with_prior",
    "fit_spectral_model",
    "greedy_fill",
    "marginal_gains",
    "predict_loss",
    "propose_allocation",
    "rank_floor",
    "spearman",
    "spectral_features",
    "unit_group",
]

MODEL_KIND = "hydra-rank/logrank-ridge"
MODEL_VERSION = 1
GROUPS = ("vision.attn", "vision.mlp", "projector.proj", "language.attn", "language.mlp")
FEATURES = (*GROUPS, "depth")

# A unit's description: r_max, params per rank, and where it sits.
Unit = Mapping[str, Any]  # {"r_max": int, "params_per_rank": int}


def unit_group(unit: str) -> tuple[str, int]:
    """``("language.mlp", 3)``: the group and layer index of unit ``"path::slot"`` (modules outside
    the vision tower and the projector count as language)."""
    place = module_place(split_unit(unit)[0])
    tower = place.tower if place.tower in ("vision", "projector") else "language"
    return f"{tower}.{place.block}", place.layer


def _layout(units: Sequence[str]) -> tuple[list[int], np.ndarray]:
    """Group index and relative depth (-0.5..0.5 within the tower) of each unit."""
    places = [unit_group(u) for u in units]
    deepest: dict[str, int] = {}
    for group, layer in places:
        tower = group.split(".")[0]
        deepest[tower] = max(deepest.get(tower, 0), layer)
    groups = [GROUPS.index(g) for g, _ in places]
    depth = np.array(
        [(layer / deepest[g.split(".")[0]] - 0.5) if deepest[g.split(".")[0]] else 0.0 for g, layer in places]
    )
    return groups, depth


def _normalised(signals: Mapping[str, float], units: Sequence[str]) -> np.ndarray:
    s = np.array([max(float(signals.get(u, 0.0)), 0.0) for u in units])
    mean = s.mean() if s.size and s.mean() > 0 else 1.0
    return s / mean + 1e-3  # a floor: a unit never has exactly zero worth


def features(ranks: Mapping[str, int], signals: Mapping[str, float], units: Mapping[str, Unit]) -> np.ndarray:
    """The feature vector (order: :data:`FEATURES`) of one rank configuration."""
    names = sorted(units)
    groups, depth = _layout(names)
    s = _normalised(signals, names)
    r = np.array([ranks.get(u, 0) for u in names], dtype=float)
    r_max = np.array([units[u]["r_max"] for u in names], dtype=float)
    z = float((s * np.log1p(r_max)).sum()) or 1.0
    contrib = s * np.log1p(r) / z
    phi = np.zeros(len(FEATURES))
    np.add.at(phi, groups, contrib)
    phi[-1] = float((contrib * depth).sum())
    return phi


# Ridge strengths tried when none is given; ``inf`` keeps only the shared slope (the prior:
# "rank goes where the gradients are"), which wins when the probes do not generalise.
RIDGE_GRID = (0.3, 1.0, 3.0, math.inf)


def fit_performance_model(
    configs: Sequence[Mapping[str, int]],
    losses: Sequence[float],
    signals: Mapping[str, float],
    units: Mapping[str, Unit],
    ridge: float | None = None,
) -> dict[str, Any]:
    """Fit the model on probe runs: ``configs[j]`` (unit -> rank) reached validation loss
    ``losses[j]``. ``ridge=None`` picks the strength from :data:`RIDGE_GRID` with the smallest
    leave-one-out squared error over the probes (the reported leave-one-out Spearman is then
    optimistic: the same folds chose the ridge). Returns the serialisable model (JSON-safe)."""
    y = np.asarray(losses, dtype=float)
    selection = None
    if ridge is None:
        errors = [_loo_squared_error(configs, y, signals, units, lam) for lam in RIDGE_GRID]
        ridge = RIDGE_GRID[int(np.argmin(errors))]
        selection = {"grid": [_ridge_json(v) for v in RIDGE_GRID], "loo_mse": [round(e, 8) for e in errors]}
    core = _fit_core(configs, losses, signals, units, ridge)
    model = _model_json(MODEL_KIND, MODEL_VERSION, FEATURES, core, ridge, "rms_grad_per_rank")
    if selection is not None:
        model["ridge_selection"] = selection
    pred = np.array([predict_loss(model, c, signals, units) for c in configs])
    model["fit"] = {
        "probes": len(configs),
        "spearman_in_sample": round(spearman(pred, y), 4),
        "spearman_loo": round(_loo_spearman(configs, y, signals, units, ridge), 4),
    }
    return model


def _model_json(
    kind: str, version: int, names: Sequence[str], core: Mapping[str, Any], ridge: float, signal: str
) -> dict[str, Any]:
    """The serialisable fitted model (both kinds): what the bundle's rank schedule carries."""
    return {
        "kind": kind,
        "version": version,
        "feature_names": list(names),
        "weights": [round(float(v), 6) for v in core["weights"]],
        "intercept": round(core["intercept"], 6),
        "prior_slope": round(core["prior_slope"], 6),
        "ridge": _ridge_json(ridge),
        "signal": signal,
    }


def _ridge_json(ridge: float) -> float | None:
    return None if math.isinf(ridge) else ridge  # None: prior only (JSON has no infinity)


def _loo_squared_error(configs, y, signals, units, ridge) -> float:
    if len(configs) < 3:
        return 0.0
    errors = []
    for j in range(len(configs)):
        rest = [c for k, c in enumerate(configs) if k != j]
        m = _fit_core(rest, np.delete(y, j), signals, units, ridge)
        errors.append((predict_loss(m, configs[j], signals, units) - y[j]) ** 2)
    return float(np.mean(errors))


def _loo_spearman(configs, y, signals, units, ridge) -> float:
    if len(configs) < 4:
        return float("nan")
    preds = []
    for j in range(len(configs)):
        rest = [c for k, c in enumerate(configs) if k != j]
        m = _fit_core(rest, np.delete(y, j), signals, units, ridge)
        preds.append(predict_loss(m, configs[j], signals, units))
    return spearman(np.array(preds), y)


def _fit_core(configs, losses, signals, units, ridge) -> dict[str, Any]:
    x = np.stack([features(c, signals, units) for c in configs])
    return {**fit_ridge_with_prior(x, losses, len(GROUPS), ridge), "feature_names": list(FEATURES)}


def fit_ridge_with_prior(x: np.ndarray, losses: Sequence[float], shared: int, ridge: float) -> dict[str, Any]:
    """The fit of both model kinds: ``x [probes, features]``; a single non-positive slope ``a``
    on the sum of the first ``shared`` features (every group equally useful: the prior), then
    ridge-regularised corrections ``w = prior + delta`` (``ridge`` relative to the features'
    mean variance; ``inf`` keeps the prior)."""
    y = np.asarray(losses, dtype=float)
    total = x[:, :shared].sum(axis=1)
    tc, yc = total - total.mean(), y - y.mean()
    a = min(float((tc @ yc) / (tc @ tc)) if tc @ tc > 1e-12 else 0.0, 0.0)
    prior = np.array([a] * shared + [0.0] * (x.shape[1] - shared))
    if math.isinf(ridge):
        return {
            "weights": [float(v) for v in prior],
            "intercept": float(y.mean() - x.mean(axis=0) @ prior),
            "prior_slope": a,
        }
    xc = x - x.mean(axis=0)
    lam = ridge * (np.trace(xc.T @ xc) / x.shape[1] + 1e-12)
    w = prior + np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (yc - xc @ prior))
    b = float(y.mean() - x.mean(axis=0) @ w)
    return {"weights": [float(v) for v in w], "intercept": b, "prior_slope": a}


def predict_loss(
    model: Mapping[str, Any],
    ranks: Mapping[str, int],
    signals: Mapping[str, Any],
    units: Mapping[str, Unit],
) -> float:
    """Predicted validation loss of ``ranks``. ``signals``: what the model's kind reads per unit
    (``logrank``: one gradient signal; ``spectral``: the squared singular values of the unit's
    gradient sketch, see :func:`~mobile_peft.core.realloc.gradient_spectrum`)."""
    featurise, names = _kind(model)
    if list(model["feature_names"]) != list(names):
        raise ValueError(f"performance model features {model['feature_names']} differ from {list(names)}")
    return float(model["intercept"] + np.dot(model["weights"], featurise(ranks, signals, units)))


def check_model(model: Mapping[str, Any]) -> str:
    """The model's ``kind`` (a model without one is a ``logrank`` model written before kinds
    existed); an unknown kind or version raises ``ValueError``."""
    _kind(model)
    return str(model.get("kind", MODEL_KIND))


def _kind(model: Mapping[str, Any]) -> tuple[Callable[..., np.ndarray], tuple[str, ...]]:
    kind = model.get("kind", MODEL_KIND)
    version = model.get("version", MODEL_VERSION if kind == MODEL_KIND else None)
    known = {MODEL_KIND: MODEL_VERSION, SPECTRAL_KIND: SPECTRAL_VERSION}
    if known.get(kind) != version:
        raise ValueError(
            f"performance model kind {kind!r} version {version!r} is not one this SDK reads "
            f"({', '.join(f'{k} v{v}' for k, v in known.items())}); re-plan with this SDK's hydra-rank."
        )
    return (features, FEATURES) if kind == MODEL_KIND else (spectral_features, GROUPS)


def unit_utilities(
    model: Mapping[str, Any], signals: Mapping[str, float], units: Mapping[str, Unit]
) -> dict[str, float]:
    """``u_i``: predicted loss decrease per unit of ``log(1 + r_i)`` (before the common 1/Z)."""
    names = sorted(units)
    groups, depth = _layout(names)
    s = _normalised(signals, names)
    w = np.asarray(model["weights"], dtype=float)
    u = -(w[groups] + w[-1] * depth) * s
    return dict(zip(names, u.tolist()))


def greedy_fill(
    gain: Mapping[str, Callable[[int], float]],
    costs: Mapping[str, tuple[int, int]],
    budget: int,
    start: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Repeatedly give one rank to the unit with the best ``gain[unit](r) / params_per_rank``
    until nothing fits in ``budget`` (+1%) or the budget is reached. ``costs[unit] =
    (r_max, params_per_rank)``."""
    ranks = {u: int((start or {}).get(u, 0)) for u in costs}
    used = sum(ranks[u] * costs[u][1] for u in costs)
    while used < budget:
        best, best_score = None, -math.inf
        for u, (r_max, ppr) in costs.items():
            if ranks[u] >= r_max or used + ppr > budget * (1 + BUDGET_TOLERANCE):
                continue
            score = float(gain[u](ranks[u])) / ppr
            if score > best_score:
                best, best_score = u, score
        if best is None:
            break
        ranks[best] += 1
        used += costs[best][1]
    return ranks


# The min_rank floor may take at most this share of the budget (the rest is what the search moves).
MAX_FLOOR_SHARE = 0.5


def propose_allocation(
    signals: Mapping[str, Any],
    model: Mapping[str, Any],
    units: Mapping[str, Unit],
    budget: int,
    min_rank: int = 1,
) -> dict[str, int]:
    """The allocation (unit -> rank) that maximises the model's predicted loss decrease within
    ``budget`` parameters (±1%): every unit starts at ``min_rank`` (capped by its ``r_max``; from
    zero when that floor would take more than :data:`MAX_FLOOR_SHARE` of the budget, see
    :func:`rank_floor`), then ranks go greedily to the best utility per parameter.

    A floor of one slot per module (``rank_floor(per_module=True)``, what ``ard`` keeps) was
    measured here too and is not used: on the rank benchmark's validation cut, Hydra adapters,
    hydra-rank minus uniform was -0.4 points with it and +1.9 without (benchmarks/README.md).

    ``signals``: what the model's kind reads per unit (see :func:`predict_loss`).
    ``units``: unit -> ``{"r_max": int, "params_per_rank": int}``.
    """
    costs = {u: (int(units[u]["r_max"]), int(units[u]["params_per_rank"])) for u in units}
    gain = marginal_gains(model, signals, units)
    return greedy_fill(gain, costs, budget, rank_floor(units, budget, min_rank))


def rank_floor(
    units: Mapping[str, Unit],
    budget: int,
    min_rank: int,
    per_module: bool = False,
) -> dict[str, int]:
    """The ranks an allocation keeps (unit -> ``min_rank``, capped by its ``r_max``; units without
    a floor left out): the first of these that takes at most :data:`MAX_FLOOR_SHARE` of the budget,
    so the allocator has at least the other half to move --

    * every unit;
    * with ``per_module``, one unit per module (:func:`_module_floor`): a Hydra module keeps its
      parallel *or* its sequential branch;
    * none.

    A floor of every unit would spend (nearly) the whole budget of Hydra's two slots per module at
    a LoRA-rank-2 budget and leave nothing to move."""
    costs = {u: (int(units[u]["r_max"]), int(units[u]["params_per_rank"])) for u in units}
    candidates = [{u: min(min_rank, r_max) for u, (r_max, _) in costs.items()}]
    if per_module:
        candidates.append(_module_floor(costs, min_rank))
    for floor in candidates:
        if sum(r * costs[u][1] for u, r in floor.items()) <= budget * MAX_FLOOR_SHARE:
            return floor
    return {}


def _module_floor(costs: Mapping[str, tuple[int, int]], min_rank: int) -> dict[str, int]:
    """``min_rank`` on one slot per module: its cheapest (so at a LoRA-rank-2 budget the floor is
    at most half of it), on a tie the first in sorted order."""
    best: dict[str, tuple[int, str]] = {}
    for u in sorted(costs):
        module, _ = split_unit(u)
        if module not in best or costs[u][1] < best[module][0]:
            best[module] = (costs[u][1], u)
    return {u: min(min_rank, costs[u][0]) for _, u in best.values()}


def marginal_gains(
    model: Mapping[str, Any], signals: Mapping[str, Any], units: Mapping[str, Unit]
) -> dict[str, Callable[[int], float]]:
    """unit -> ``gain(r)``: the predicted loss decrease of going from rank ``r`` to ``r + 1``
    (concave in ``r`` for both kinds: ``log(2 + r) - log(1 + r)`` times the unit's utility, or the
    unit's ``(r + 1)``-th squared singular value times its group's weight)."""
    _kind(model)
    if model.get("kind", MODEL_KIND) == MODEL_KIND:
        util = unit_utilities(model, signals, units)
        return {u: (lambda r, v=util[u]: v * (math.log(2 + r) - math.log(1 + r))) for u in units}
    names = sorted(units)
    groups, _ = _layout(names)
    energy = _energies(signals, names, units)
    w = np.asarray(model["weights"], dtype=float)
    return {
        u: (lambda r, e=energy[i], v=-float(w[groups[i]]): v * float(e[r]) if r < e.size else 0.0)
        for i, u in enumerate(names)
    }


# -- the spectral model ------------------------------------------------------------------------------

SPECTRAL_KIND = "hydra-rank/spectral-ridge"
SPECTRAL_VERSION = 2


def _energies(
    spectra: Mapping[str, Sequence[float]], names: Sequence[str], units: Mapping[str, Unit]
) -> list[np.ndarray]:
    """Each unit's squared singular values (sorted, ``r_max`` of them, zero-padded) divided by the
    total over all units: the share of the (sketched) gradient energy each rank can capture."""
    rows = []
    for u in names:
        e = np.sort(np.clip(np.asarray(spectra.get(u, ()), dtype=float), 0.0, None))[::-1]
        r_max = int(units[u]["r_max"])
        rows.append(np.concatenate([e[:r_max], np.zeros(max(0, r_max - e.size))]))
    total = float(sum(r.sum() for r in rows)) or 1.0
    return [r / total for r in rows]


def spectral_features(
    ranks: Mapping[str, int], spectra: Mapping[str, Sequence[float]], units: Mapping[str, Unit]
) -> np.ndarray:
    """Per group (:data:`GROUPS`): the share of gradient energy the configuration's ranks capture,
    ``phi_g = sum_{i in g} sum_{k <= r_i} sigma_ik^2 / sum_i sum_k sigma_ik^2``."""
    names = sorted(units)
    groups, _ = _layout(names)
    energy = _energies(spectra, names, units)
    gained = [float(e[: int(ranks.get(u, 0))].sum()) for u, e in zip(names, energy)]
    phi = np.zeros(len(GROUPS))
    np.add.at(phi, groups, gained)
    return phi


def fit_spectral_model(
    configs: Sequence[Mapping[str, int]],
    losses: Sequence[float],
    spectra: Mapping[str, Sequence[float]],
    units: Mapping[str, Unit],
    ridge: float = 1.0,
) -> dict[str, Any]:
    """The spectral model fitted on probe runs (``configs[j]`` reached ``losses[j]``): predicted
    loss ``b + w . phi`` (:func:`spectral_features`), ``w`` by :func:`fit_ridge_with_prior`."""
    y = np.asarray(losses, dtype=float)
    x = np.stack([spectral_features(c, spectra, units) for c in configs])
    core = fit_ridge_with_prior(x, y, len(GROUPS), ridge)
    model = _model_json(SPECTRAL_KIND, SPECTRAL_VERSION, GROUPS, core, ridge, "grad_up_sketch_spectrum")
    preds, held_out = [], []
    for j in range(len(configs)):
        rest = fit_ridge_with_prior(np.delete(x, j, axis=0), np.delete(y, j), len(GROUPS), ridge)
        held_out.append(rest["intercept"] + float(np.dot(rest["weights"], x[j])))
        preds.append(predict_loss(model, configs[j], spectra, units))
    model["fit"] = {
        "probes": len(configs),
        "spearman_in_sample": round(spearman(preds, y), 4),
        "spearman_loo": round(spearman(held_out, y), 4) if len(configs) >= 4 else float("nan"),
    }
    return model


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan for fewer than 3 points."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 3:
        return float("nan")

    def rank(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):  # average ties
            idx = v == value
            r[idx] = r[idx].mean()
        return r

    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra @ ra) * (rb @ rb)))
    return float(ra @ rb / denom) if denom > 0 else float("nan")
