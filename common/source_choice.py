"""Which source a merchant serves after a private run: the DP model, DP popularity, or a blend.

With few users per merchant, a DP model can rank worse than the private
popularity it was released beside. Each merchant therefore decides locally,
on items its model never trained on, what it serves:

* candidates: the model's scores blended with popularity at popularity weights
  :data:`POPULARITY_WEIGHTS` (0 is the model alone, 1 is DP popularity alone);
  a blend adds the model's scores, standardised per user over the catalog, to
  the private item counts on a log scale (:func:`blend`,
  :func:`popularity_scores`: ``sign(c) log(1 + |c|)``, standardised: the counts' order);
* the held-out set: each user's last *training* item, for users with at least
  two (:func:`hold_out_selection`); the model never trains on it (DP-SGD and
  the users' own fit leave it out), and the reported test item stays untouched.
  The private item counts are released from all training items, held-out ones
  included: popularity is then scored on items its counts saw (through the
  Gaussian mechanism), which can only make the rule choose popularity more
  often, the safe direction; and the popularity served is as fresh as
  DP popularity's (on a sequential log the latest items matter most);
* the rule (:func:`choose`): take the candidate with the highest mean NDCG@k on
  the held-out items; serve it only if it beats popularity by more than
  :data:`MARGIN_SE` paired standard errors, else serve popularity.

The decision uses the merchant's own data and is kept at the merchant: nothing
about it is released to the federation, so what leaves the merchant and its ε
are unchanged. It is computed without noise from all of the merchant's users'
held-out items, so, like local personalisation, the recommendations served
after it are not covered by the joint-DP statement towards the merchant's
other users: each user's list depends on the others' data through this one
choice among seven weights (and otherwise only through DP releases).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from common.data.dataset import UserItemData
from common.errors import ConfigError

if TYPE_CHECKING:
    from common.models.base import Recommender
    from common.models.prior import ItemPrior

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MODEL, BLEND, POPULARITY = "model", "blend", "popularity"
SOURCES = (MODEL, BLEND, POPULARITY)
POPULARITY_WEIGHTS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
MARGIN_SE = 1.0  # a source other than popularity must beat it by this many paired SEs
CHOICE_VERSION = 1


@dataclass(frozen=True)
class SelectionSplit:
    """The data the model trains on, and the items held out to choose a source."""

    train: UserItemData  # each user's last training item removed (users with >= 2)
    held_out: UserItemData  # ``train`` with the held-out items as its test items

    @property
    def num_held_out(self) -> int:
        return len(self.held_out.test_users)


def hold_out_selection(data: UserItemData) -> SelectionSplit:
    """Move each user's last training item (users with two or more) to a selection set.

    Training items are stored oldest first, so the last one is the most recent.
    Users keep at least one training item, so the private population (users with
    training data) is unchanged; the test items are untouched.
    """
    counts = np.diff(data.train_indptr)
    chosen = np.flatnonzero(counts >= 2)
    last = data.train_indptr[chosen + 1] - 1  # positions of the held-out pairs
    keep = np.ones(data.num_train, dtype=bool)
    keep[last] = False
    new_counts = counts.copy()
    new_counts[chosen] -= 1
    indptr = np.concatenate([[0], np.cumsum(new_counts)]).astype(np.int64)
    events = data.train_events
    train = dataclasses.replace(
        data,
        train_indptr=indptr,
        train_items=data.train_items[keep],
        train_values=data.train_values[keep],
        train_events=None if events is None else events[keep],
    )
    held_out = dataclasses.replace(
        train,
        test_users=chosen.astype(np.int64),
        test_items=data.train_items[last].astype(np.int64),
        test_values=data.train_values[last],
        test_events=None if events is None else events[last],
    )
    return SelectionSplit(train=train, held_out=held_out)


def popularity_scores(counts: npt.ArrayLike) -> FloatArray:
    """The private item counts as standardised signed log-popularity, shape (items,).

    ``sign(c) log(1 + |c|)`` keeps the counts' order (noisy counts can be negative).
    """
    raw = np.asarray(counts, dtype=np.float64)
    logged = np.sign(raw) * np.log1p(np.abs(raw))
    spread = logged.std()
    return (logged - logged.mean()) / (spread if spread > 0 else 1.0)


def blend(
    model_scores: npt.ArrayLike, popularity: npt.NDArray[np.floating[Any]], weight: float
) -> npt.NDArray[np.floating[Any]]:
    """``(1 - weight)`` x the model's per-user standardised scores + ``weight`` x popularity.

    ``model_scores`` is (n, items) or (items,); ``popularity`` is
    :func:`popularity_scores`. Weight 0 returns the model's scores as they are,
    weight 1 popularity alone.
    """
    scores = np.asarray(model_scores)
    if weight <= 0:
        return scores
    if weight >= 1:
        return np.broadcast_to(popularity, scores.shape).copy()
    mean = scores.mean(axis=-1, keepdims=True)
    spread = scores.std(axis=-1, keepdims=True)
    standard = (scores - mean) / np.where(spread > 0, spread, 1.0)
    blended: npt.NDArray[np.floating[Any]] = (1.0 - weight) * standard + weight * popularity
    return blended.astype(scores.dtype, copy=False)


def source_of(weight: float) -> str:
    return MODEL if weight <= 0 else POPULARITY if weight >= 1 else BLEND


def describe_source(weight: float) -> str:
    """Plain words for what serves at popularity weight ``weight``."""
    source = source_of(weight)
    if source == MODEL:
        return "the DP model"
    if source == POPULARITY:
        return "DP popularity"
    return f"a blend (popularity weight {weight:g}) of the DP model and DP popularity"


def shared_fingerprint(shared: Mapping[str, npt.ArrayLike]) -> str:
    """First 16 hex digits of SHA-256 over the shared parameters (names sorted): which global
    model a choice was measured on, comparable between the merchant and the server."""
    digest = hashlib.sha256()
    for name in sorted(shared):
        array = np.ascontiguousarray(np.asarray(shared[name], dtype=np.float32))
        digest.update(name.encode("utf-8"))
        digest.update(str(array.shape).encode("ascii"))
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SourceChoice:
    """A merchant's decision: what it serves, and the measurements behind it."""

    weight: float  # popularity's weight in the served scores (0 model, 1 popularity)
    k: int
    held_out: int  # held-out items the candidates were scored on
    ndcg: tuple[tuple[float, float], ...]  # (popularity weight, mean NDCG@k) per candidate
    best_weight: float  # the candidate with the highest mean (served only if it clears the margin)
    gain: float  # best candidate minus popularity, mean NDCG@k
    gain_se: float  # paired standard error of ``gain``
    model: str = ""  # fingerprint of the global model measured (shared_fingerprint)
    run: str = ""
    server_round: int = 0

    @property
    def source(self) -> str:
        return source_of(self.weight)

    def ndcg_of(self, weight: float) -> float:
        return dict(self.ndcg).get(weight, math.nan)

    def reason(self) -> str:
        """One sentence: what serves and why, with the figures."""
        if self.held_out == 0:
            return "serves DP popularity: no user has two training items to hold one out"
        pop = self.ndcg_of(1.0)
        best = self.ndcg_of(self.best_weight)
        if len(self.ndcg) == 1:  # popularity alone was measured: nothing was trained
            return (
                "serves DP popularity: the federation trained no model (too few items cleared "
                f"the count threshold), so its counts took the whole epsilon (NDCG@{self.k} "
                f"{pop:.4f} on {self.held_out} held-out items)"
            )
        if self.best_weight >= 1:
            return (
                f"serves DP popularity: no candidate beat it on {self.held_out} held-out items "
                f"(NDCG@{self.k} {pop:.4f})"
            )
        scored = (
            f"{best:.4f} vs DP popularity {pop:.4f} on {self.held_out} held-out items "
            f"(NDCG@{self.k})"
        )
        if self.weight >= 1:
            return (
                f"serves DP popularity: the best candidate, {describe_source(self.best_weight)}, "
                f"scored {scored}, a gain of {self.gain:+.4f} within {MARGIN_SE:g} standard "
                f"error ({self.gain_se:.4f})"
            )
        return (
            f"serves {describe_source(self.weight)}: {scored}, a gain of {self.gain:+.4f} "
            f"(standard error {self.gain_se:.4f})"
        )

    def to_json(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["ndcg"] = [list(pair) for pair in self.ndcg]
        payload["source"] = self.source
        payload["version"] = CHOICE_VERSION
        return payload

    @classmethod
    def from_json(cls, payload: Mapping[str, Any], *, where: str) -> SourceChoice:
        try:
            return cls(
                weight=float(payload["weight"]),
                k=int(payload["k"]),
                held_out=int(payload["held_out"]),
                ndcg=tuple((float(w), float(v)) for w, v in payload["ndcg"]),
                best_weight=float(payload["best_weight"]),
                gain=float(payload["gain"]),
                gain_se=float(payload["gain_se"]),
                model=str(payload.get("model", "")),
                run=str(payload.get("run", "")),
                server_round=int(payload.get("server_round", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{where}: expected a serving-source choice written by fedrec (weight, k, "
                f"held_out, ndcg, best_weight, gain, gain_se), got an unreadable one ({exc!r}). "
                "Delete it; the next evaluated round writes a new one."
            ) from exc

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def choose(per_user: Mapping[float, npt.ArrayLike], *, k: int) -> SourceChoice:
    """The rule: the best candidate if it beats popularity (weight 1) by > MARGIN_SE paired SEs.

    ``per_user`` maps each popularity weight to the per-user NDCG@k on the same
    held-out items (weight 1.0 must be among them). Ties go to the candidate
    closer to popularity.
    """
    if 1.0 not in per_user:
        raise ValueError("the candidates must include popularity (weight 1.0)")
    arrays = {w: np.asarray(v, dtype=np.float64) for w, v in per_user.items()}
    n = len(arrays[1.0])
    means = {w: float(a.mean()) if n else 0.0 for w, a in arrays.items()}
    best = max(sorted(arrays, reverse=True), key=lambda w: means[w])  # ties: closer to popularity
    diff = arrays[best] - arrays[1.0]
    gain = float(diff.mean()) if n else 0.0
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.inf
    served = best if best >= 1.0 or gain > MARGIN_SE * se else 1.0
    return SourceChoice(
        weight=served,
        k=k,
        held_out=n,
        ndcg=tuple((w, means[w]) for w in sorted(arrays)),
        best_weight=best,
        gain=gain,
        gain_se=se,
    )


def candidate_ndcg(
    model: Recommender,
    data: UserItemData,
    prior: ItemPrior,
    *,
    k: int,
    weights: tuple[float, ...] = POPULARITY_WEIGHTS,
    chunk_users: int = 1024,
) -> dict[float, FloatArray]:
    """Per-user NDCG@k of every candidate on ``data``'s test items (the held-out set).

    ``model`` must be bound to ``data`` (a recent-items model reads each user's
    training items up to the held-out one); its scores pass through the prior
    as in evaluation. The user's training items are excluded from ranking.
    """
    import torch

    from common.metrics.ranking import full_ranking_metrics

    popularity = popularity_scores(prior.counts)
    out: dict[float, list[FloatArray]] = {w: [] for w in weights}
    model.eval()
    for start in range(0, len(data.test_users), chunk_users):
        users = data.test_users[start : start + chunk_users]
        targets = data.test_items[start : start + chunk_users]
        with torch.no_grad():
            raw = prior.apply(model.score_all(torch.as_tensor(users, dtype=torch.int64)))
        scores = raw.numpy().astype(np.float64)
        indptr, indices = data.train_csr(users)
        for weight in weights:
            metrics = full_ranking_metrics(
                blend(scores, popularity, weight),
                targets,
                exclude_indptr=indptr,
                exclude_indices=indices,
                k=k,
            )
            out[weight].append(np.asarray(metrics[f"ndcg@{k}"], dtype=np.float64))
    return {
        w: np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
        for w, parts in out.items()
    }
