"""A served merchant: a small synthetic federation, one merchant's state and a published model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from client.deploy.pseudonym import load_or_create_key, pseudonymise
from client.serving.model_dir import publish
from client.state.store import MerchantStore
from common.config import parse_run_config
from common.constants import MERCHANT_DATA_FILE, MERCHANT_PSEUDONYM_KEY_FILE, MERCHANT_USERS_FILE
from common.data.catalog import ItemCatalog
from common.data.dataset import UserItemData
from common.data.partition import PartitionConfig
from common.models.base import Recommender, build_model
from common.models.prior import ItemPrior
from common.privacy.cooccurrence import gram_contributions
from common.privacy.counts import most_counted
from simulations.merchants import prepare_merchants
from simulations.synthetic import SyntheticSpec, generate_federation


@dataclass(frozen=True)
class Served:
    models: Path  # a versions directory (CURRENT + one version)
    state: Path
    data: UserItemData
    catalog: ItemCatalog
    model: Recommender  # the model the index must reproduce (shared + this merchant's users)
    raw_users: tuple[str, ...]  # user IDs as the merchant's application knows them
    settings: dict[str, object]


def make_served(
    root: Path,
    *,
    kind: str = "mf",
    untrained: int = 0,
    pseudonymised: bool = False,
    seed: int = 0,
) -> Served:
    spec = SyntheticSpec(num_merchants=2, num_users=160, num_items=80, mean_events=8, seed=seed)
    events = generate_federation(spec)
    catalog, merchants = prepare_merchants(
        events, PartitionConfig(num_parties=2), root / "federation", seed=seed
    )
    name = sorted(merchants)[0]
    state = root / "federation" / "merchants" / name
    data = merchants[name]
    raw_users = data.user_keys
    if pseudonymised:
        key = load_or_create_key(state / MERCHANT_PSEUDONYM_KEY_FILE)
        data = dataclasses.replace(
            data, user_keys=tuple(str(k) for k in pseudonymise(key, list(raw_users)))
        )
        data.save(state, data_file=MERCHANT_DATA_FILE, users_file=MERCHANT_USERS_FILE)
    settings: dict[str, object] = {"model": kind, "embedding-dim": 8, "mlp-layers": "16 8"}
    if kind == "ease":  # a model from one DP release: its run is private, one round
        settings |= {"privacy-unit": "user", "target-epsilon": 3.0, "num-server-rounds": 1}
    config = parse_run_config(settings)
    model = build_model(
        config.model,
        num_users=data.num_users,
        num_items=data.num_items,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    if kind == "ease":  # the Gram of the 30 most counted items, as a release would give
        counts = np.bincount(data.train_items, minlength=data.num_items).astype(np.float64)
        items = most_counted(counts, 30)
        gram = gram_contributions(data, items, cap=200, rng=np.random.default_rng(seed))
        model.load_shared(
            {
                "items": torch.as_tensor(items, dtype=torch.float32),
                "gram": torch.as_tensor(gram, dtype=torch.float32),
                "noise": torch.zeros(1),
            }
        )
    MerchantStore(state).save_local(model.local_parameters())
    prior = None
    if untrained:
        counts = np.arange(data.num_items, 0, -1, dtype=np.float64)  # item 0 most popular
        prior = ItemPrior(counts=counts, trained=np.arange(data.num_items - untrained))
    models = root / "models"
    publish(
        models,
        settings=settings,
        shared={n: p.detach() for n, p in model.shared_parameters().items()},
        catalog=catalog,
        prior=prior,
        label="v1",
    )
    return Served(models, state, data, catalog, model.eval(), raw_users, settings)


@pytest.fixture
def served(tmp_path: Path) -> Served:
    return make_served(tmp_path)
