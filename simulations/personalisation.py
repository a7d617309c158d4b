"""Global versus personalised, per merchant: NDCG@K across the personalisation knob lambda.

For every merchant of a finished run, the global shared parameters (with the
merchant's own user vectors) are fine-tuned locally with proximal weight
lambda (:func:`client.serving.personalise.personalise`, what ``fedrec serve
--personalisation`` does) on the merchant's training interactions, and
evaluated on its held-out items. ``lambda = inf`` is the global model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client.serving.model_dir import load_global_model
from client.serving.personalise import FINE_TUNE_EPOCHS, personalise
from client.state.store import MerchantStore
from common.constants import MERCHANTS_DIR
from common.errors import RunDirError
from common.evaluation import evaluate_model
from common.models.base import build_model
from common.seeding import numpy_rng

DEFAULT_LAMBDAS = (math.inf, 1.0, 0.1, 0.01, 0.001, 0.0)


@dataclass(frozen=True)
class MerchantRow:
    merchant: str
    users: int  # evaluated users (held-out items)
    train_interactions: int
    ndcg: dict[float, float]  # lambda -> NDCG@K (inf: the global model)

    def gain(self, lam: float) -> float:
        return self.ndcg[lam] - self.ndcg[math.inf]


@dataclass(frozen=True)
class PersonalisationTable:
    k: int
    lambdas: tuple[float, ...]
    rows: tuple[MerchantRow, ...]

    def helped(self, lam: float) -> int:
        """Merchants whose NDCG@K is higher at ``lam`` than with the global model."""
        return sum(row.gain(lam) > 0 for row in self.rows)

    def mean_ndcg(self, lam: float) -> float:
        return float(np.mean([row.ndcg[lam] for row in self.rows]))

    def best_lambda(self) -> float:
        """The finite lambda helping the most merchants (ties: higher mean NDCG@K)."""
        finite = [lam for lam in self.lambdas if not math.isinf(lam)]
        return max(finite, key=lambda lam: (self.helped(lam), self.mean_ndcg(lam)))

    def to_json(self) -> dict[str, object]:
        def name(lam: float) -> str:
            return "inf" if math.isinf(lam) else f"{lam:g}"

        return {
            "k": self.k,
            "lambdas": [name(lam) for lam in self.lambdas],
            "best_lambda": name(self.best_lambda()),
            "helped": {name(lam): self.helped(lam) for lam in self.lambdas},
            "mean_ndcg": {name(lam): self.mean_ndcg(lam) for lam in self.lambdas},
            "merchants": [
                {
                    "merchant": row.merchant,
                    "users": row.users,
                    "train_interactions": row.train_interactions,
                    "ndcg": {name(lam): value for lam, value in row.ndcg.items()},
                }
                for row in self.rows
            ],
        }

    def markdown(self) -> str:
        def name(lam: float) -> str:
            return "global (λ=∞)" if math.isinf(lam) else f"λ={lam:g}"

        head = "| merchant | users | " + " | ".join(name(lam) for lam in self.lambdas) + " |"
        lines = [head, "|" + "---|" * (2 + len(self.lambdas))]
        for row in self.rows:
            cells = [f"{row.ndcg[lam]:.4f}" for lam in self.lambdas]
            lines.append(f"| {row.merchant} | {row.users} | " + " | ".join(cells) + " |")
        lines.append(
            "| **mean** | | "
            + " | ".join(f"**{self.mean_ndcg(lam):.4f}**" for lam in self.lambdas)
            + " |"
        )
        lines.append(
            "| helped | | "
            + " | ".join(
                "–" if math.isinf(lam) else f"{self.helped(lam)}/{len(self.rows)}"
                for lam in self.lambdas
            )
            + " |"
        )
        return "\n".join(lines) + "\n"


def personalisation_table(
    run_dir: Path,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    *,
    epochs: int = FINE_TUNE_EPOCHS,
    seed: int = 0,
) -> PersonalisationTable:
    """NDCG@K of every merchant of ``run_dir`` for each lambda (inf is always included)."""
    global_model = load_global_model(run_dir)
    run = global_model.run
    k = run.federation.top_k
    grid = tuple(dict.fromkeys([math.inf, *lambdas]))
    merchants = sorted(p for p in (run_dir / MERCHANTS_DIR).iterdir() if p.is_dir())
    if not merchants:
        raise RunDirError(f"{run_dir / MERCHANTS_DIR} holds no merchant directories.")
    rows = []
    for directory in merchants:
        store = MerchantStore(directory)
        data = store.load_data()
        local = store.load_local()
        scores: dict[float, float] = {}
        for lam in grid:
            model = build_model(
                run.model,
                num_users=data.num_users,
                num_items=data.num_items,
                generator=torch.Generator().manual_seed(seed),
            )
            model.bind(data)
            model.load_shared(global_model.shared)
            if local is not None:
                model.load_local(local)
            personalise(
                model,
                data,
                run.train,
                lam=lam,
                epochs=epochs,
                rng=numpy_rng(seed, "personalise", store.name),
            )
            result = evaluate_model(
                model,
                data,
                k=k,
                rng=numpy_rng(seed, "evaluate", store.name),
                prior=global_model.prior,
            )
            scores[lam] = result.means[f"ndcg@{k}"]
        rows.append(
            MerchantRow(
                merchant=store.name,
                users=len(data.test_users),
                train_interactions=data.num_train,
                ndcg=scores,
            )
        )
    return PersonalisationTable(k=k, lambdas=grid, rows=tuple(rows))
