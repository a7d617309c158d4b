"""Tuned settings placed beneath a user's own, and the ``--set`` pairs they come from.

:func:`run_settings` is the one layering every entry point uses (``fedrec
simulate``, ``fedrec run``, experiment files, the benchmarks): DP-SGD's tuned
defaults under DP, the recipe for real interaction logs below with privacy off.

``fedrec simulate --data FILE`` (and experiment files and the real-data
benchmark) train with these when privacy is off and the user has not chosen
another model, and so does any non-private run that chooses ``model=history``
(on synthetic data too): a history model (:mod:`common.models.history`) trained on
next-item softmax, each merchant's Adam kept across rounds, FedAvgM's server
step and a cosine learning rate over the rounds. Explicit settings always win.

Choosing ``model=sasrec`` brings SASRec's own recipe the same way
(:data:`SASREC_DEFAULTS`, privacy off; :data:`SASREC_PRIVATE_DEFAULTS` over
DP-SGD's layer under DP).

Chosen on validation splits of MovieLens 100K and Amazon Beauty (each user's
last training item as the target; the test items never read): see
``benchmarks/results/real_data.md`` for the measurements and the ablation.
DP-SGD has its own tuned layer (:data:`common.privacy.config.PRIVATE_DEFAULTS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from common.errors import ConfigError

REAL_LOG_DEFAULTS: Final[Mapping[str, Any]] = {
    "model": "history",
    "embedding-dim": 128,
    "batch-users": 128,
    "positions-per-user": 8,
    "user-epochs": 0,
    "weight-decay": 0.0,
    "learning-rate": 0.003,
    "local-steps": 35,
    "num-server-rounds": 12,
    "keep-optimizer-state": True,
    "learning-rate-schedule": "cosine",
    "strategy": "fedavgm",
    "fedavgm-learning-rate": 3.0,
}


# SASRec, privacy off: a sampled softmax against 1,024 uniform negatives (on Beauty's 12k items
# the full softmax costs ~8x more per step than 256 negatives and loses at equal time), plain
# FedAvg (FedAvgM's server step of 3 halves SASRec's federated NDCG on MovieLens), each
# merchant's Adam kept across rounds, cosine learning rate.
SASREC_DEFAULTS: Final[Mapping[str, Any]] = {
    "embedding-dim": 64,
    "sasrec-blocks": 2,
    "sasrec-heads": 1,
    "dropout": 0.2,
    "history-max": 50,
    "sasrec-negatives": 1024,
    "batch-users": 128,
    "weight-decay": 0.0,
    "learning-rate": 0.003,
    "learning-rate-schedule": "cosine",
    "keep-optimizer-state": True,
    "strategy": "fedavg",
    "local-steps": 20,
    "num-server-rounds": 10,
}
# SASRec under DP-SGD (over PRIVATE_DEFAULTS): a smaller model, large Poisson batches, C = 1,
# several passes per round, and a lower item threshold, so the item prior trains thousands
# of items rather than a few hundred (Beauty, 3 merchants, user-level ε = 8).
SASREC_PRIVATE_DEFAULTS: Final[Mapping[str, Any]] = {
    "embedding-dim": 32,
    "dropout": 0.1,
    "history-max": 50,
    "sasrec-negatives": 128,
    "batch-users": 1024,
    "local-epochs": 3,
    "learning-rate": 0.01,
    "learning-rate-schedule": "cosine",
    "weight-decay": 0.0,
    "user-epochs": 0,
    "max-grad-norm": 1.0,
    "item-threshold": 1.0,
    "count-epsilon-share": 0.1,  # as measured (README, SASRec); PRIVATE_DEFAULTS has 0.5
}
# EASE over DP co-occurrence (over PRIVATE_DEFAULTS): one release, half of epsilon on the
# item counts (they choose the items and are the popularity blended in), the items whose
# noisy count clears 5 noise std (at most 1,000), ridge 10 x the Gram's mean diagonal, a
# user's k-th most recent item weighted 0.9^(k-1).
# Validation splits, 3 merchants, eps 3 (README, "DP co-occurrence"): count share 0.2 / 0.35
# / 0.5 / 0.65 and thresholds 3 to 10 measured on MovieLens 100K and Amazon Beauty.
EASE_PRIVATE_DEFAULTS: Final[Mapping[str, Any]] = {
    "num-server-rounds": 1,
    "count-epsilon-share": 0.5,
    "item-threshold": 5.0,
    "ease-items": 1000,
    "ease-ridge": 10.0,
    "ease-decay": 0.9,
    # validation: 3 merchants of 315 users at eps 1 served 0.67x DP popularity (counts at half
    # of eps); 943 x 1 and 945 x 3 served 1.04x and 1.15x
    "count-only-below": 600.0,
    # a federation whose first counts clear fewer items than 2 x top-k trains nothing and
    # tops its counts up (validation: 3 cleared items, 10 merchants of Amazon Beauty at eps 1,
    # served 0.80x DP popularity with counts at half of eps; 50 and 54 items served 1.16x
    # and 1.15x)
    "train-min-items": 20,
}
# The model a user-level DP run trains when none is chosen: at real merchant sizes DP EASE
# serves more than DP-SGD's MF (README, "EASE from one DP co-occurrence release" and "What a
# merchant serves under DP", test splits: Amazon Beauty, 3 merchants, eps 3, served 1.46x DP
# popularity against MF's 1.05x; MovieLens, 3 merchants, eps 3, 1.14x against 0.82x).
PRIVATE_DEFAULT_MODEL: Final = "ease"
MODEL_RECIPES: Final[Mapping[str, Mapping[str, Any]]] = {"sasrec": SASREC_DEFAULTS}
PRIVATE_MODEL_RECIPES: Final[Mapping[str, Mapping[str, Any]]] = {
    "sasrec": SASREC_PRIVATE_DEFAULTS,
    "ease": EASE_PRIVATE_DEFAULTS,
}


def with_real_log_defaults(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` over the recipe, unless they choose a model the recipe is not for."""
    model = settings.get("model", REAL_LOG_DEFAULTS["model"])
    if model != REAL_LOG_DEFAULTS["model"]:
        return dict(settings)
    return {**REAL_LOG_DEFAULTS, **settings}


def parse_set_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` pairs (repeatable; the last of a key wins) as settings."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}.")
        out[key.strip()] = value.strip()
    return out


def run_settings(
    run: Mapping[str, Any], privacy: Mapping[str, Any], *, real_log: bool = False
) -> dict[str, Any]:
    """Run settings over the tuned defaults that apply: under DP the private defaults and the
    model's private recipe over them (user-level DP with no model chosen trains
    :data:`PRIVATE_DEFAULT_MODEL`); with privacy off, the chosen model's recipe
    (:data:`MODEL_RECIPES`), or the real-log recipe (:data:`REAL_LOG_DEFAULTS`) on a real log
    and on any data when the history model is chosen (the recipe is that model's defaults)."""
    from common.privacy.config import PRIVATE_DEFAULTS

    raw = dict(run)
    model = raw.get("model")
    unit = privacy.get("privacy-unit")
    off = privacy.get("privacy-unit", raw.get("privacy-unit", "off")) == "off"
    if privacy.get("target-epsilon") is not None and unit in ("user", "interaction"):
        if model is None and unit == "user":
            model = raw["model"] = _default_private_model(raw)
        raw = {**PRIVATE_DEFAULTS, **PRIVATE_MODEL_RECIPES.get(str(model), {}), **raw}
    elif off and str(model) in MODEL_RECIPES:
        raw = {**MODEL_RECIPES[str(model)], **raw}
    elif off and (real_log or model == REAL_LOG_DEFAULTS["model"]):
        raw = with_real_log_defaults(raw)
    return {**raw, **{k: v for k, v in privacy.items() if v is not None}}


def _default_private_model(raw: Mapping[str, Any]) -> str:
    """The user-level DP model when none is chosen; refused where the settings ask for rounds."""
    rounds = raw.get("num-server-rounds")
    if rounds is not None and str(rounds).strip() != "1":
        raise ConfigError(
            f"Under user-level DP with no model chosen, fedrec learns {PRIVATE_DEFAULT_MODEL} "
            f"from one release of DP statistics (one round), but num-server-rounds={rounds} asks "
            "for rounds of DP-SGD: choose the model to train in rounds (--model mf, history, "
            'sasrec or neumf; `model = "mf"` in an experiment\'s [run]), or leave the rounds out.'
        )
    return PRIVATE_DEFAULT_MODEL
