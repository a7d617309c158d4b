"""What each merchant of a finished private run serves, scored on its test items.

After a private run every merchant chose, on items it held out from the run's
releases, whether to serve the DP model, DP popularity or a blend
(:mod:`common.source_choice`). This scores that choice on the merchant's
reported test items (never used by the choice), with its own saved users,
exactly as ``fedrec recommend`` and ``fedrec serve`` rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from client.serving.index import serving_choice
from client.serving.model_dir import GlobalModel, load_global_model
from client.state.store import MerchantStore
from common.constants import MERCHANTS_DIR
from common.evaluation import EvaluationResult, evaluate_scores
from common.models.base import build_model
from common.seeding import numpy_rng
from common.source_choice import SourceChoice, blend, popularity_scores


@dataclass(frozen=True)
class Served:
    """One merchant: its test users scored as it serves them, and the choice behind it."""

    name: str
    result: EvaluationResult
    choice: SourceChoice | None  # None: the model serves (no choice made for this model)
    user_keys: tuple[str, ...]  # the merchant's user keys (result.users index them)

    def reason(self) -> str:
        return "serves the model" if self.choice is None else self.choice.reason()


def evaluate_served(
    global_model: GlobalModel,
    directory: Path,
    *,
    k: int,
    seed: int,
    follow_choice: bool = True,
) -> Served | None:
    """Score ``directory``'s test users as it serves them (``follow_choice=False``: the
    model alone, whatever it chose); ``None`` without trained users."""
    store = MerchantStore(directory)
    data = store.load_data()
    local = store.load_local()
    if local is None or len(data.test_users) == 0:
        return None
    model = build_model(
        global_model.run.model,
        num_users=data.num_users,
        num_items=data.num_items,
        generator=torch.Generator().manual_seed(seed),
    )
    model.bind(data)
    model.load_shared(global_model.shared)
    model.load_local(local)
    model.eval()
    prior = global_model.prior
    choice = serving_choice(global_model, store) if follow_choice else None
    weight = 0.0 if choice is None or prior is None else choice.weight
    popularity = None if prior is None else popularity_scores(prior.counts)

    def scorer(users: npt.NDArray[np.int64]) -> npt.NDArray[np.floating]:
        with torch.no_grad():
            scores = model.score_all(torch.as_tensor(users, dtype=torch.int64))
            raw = (prior.apply(scores) if prior is not None else scores).numpy()
        return raw if popularity is None else blend(raw, popularity, weight)

    result = evaluate_scores(scorer, data, k=k, rng=numpy_rng(seed, "evaluate", store.name))
    return Served(store.name, result, choice, data.user_keys)


def served_by_merchant(
    run_dir: Path,
    *,
    k: int,
    seed: int,
    global_model: GlobalModel | None = None,
    follow_choice: bool = True,
) -> list[Served]:
    """Every merchant of the run at ``run_dir``, in name order (``global_model``: the run's,
    when its directory is not complete yet)."""
    global_model = global_model or load_global_model(run_dir)
    out = []
    for directory in sorted(p for p in (run_dir / MERCHANTS_DIR).iterdir() if p.is_dir()):
        served = evaluate_served(
            global_model, directory, k=k, seed=seed, follow_choice=follow_choice
        )
        if served is not None:
            out.append(served)
    return out


def served_comparison(served: list[Served]) -> dict[str, object]:
    """``metrics.json``'s ``served`` entry: overall and per-merchant means, and each source."""
    from common.constants import EVAL_USERS

    per_merchant: dict[str, dict[str, float]] = {}
    pooled: dict[str, list[npt.NDArray[np.float64]]] = {}
    for one in served:
        means = dict(one.result.means)
        means[EVAL_USERS] = float(one.result.num_users)
        per_merchant[one.name] = means
        for metric, values in one.result.per_user.items():
            pooled.setdefault(metric, []).append(np.asarray(values, dtype=np.float64))
    overall = {m: float(np.nanmean(np.concatenate(v))) for m, v in pooled.items()}
    overall[EVAL_USERS] = float(sum(one.result.num_users for one in served))
    sources = {
        one.name: {
            "source": "model" if one.choice is None else one.choice.source,
            "popularity_weight": 0.0 if one.choice is None else one.choice.weight,
            "reason": one.reason(),
            "held_out": 0 if one.choice is None else one.choice.held_out,
        }
        for one in served
    }
    return {"overall": overall, "per_merchant": per_merchant, "sources": sources}
