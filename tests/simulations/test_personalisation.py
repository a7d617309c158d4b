"""The personalisation table: lambda = inf is the global model; the default helps most merchants."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from client.serving.personalise import DEFAULT_LAMBDA
from client.state.store import MerchantStore
from client.training.loop import train_local
from common.config import parse_run_config
from common.constants import GLOBAL_MODEL_FILE, RUN_CONFIG_FILE
from common.data.dataset import concat_user_item_data
from common.data.partition import PartitionConfig
from common.evaluation import evaluate_model
from common.models.base import build_model
from common.seeding import numpy_rng
from simulations.merchants import prepare_merchants
from simulations.personalisation import personalisation_table
from simulations.synthetic import SyntheticSpec, generate_federation

SETTINGS = {"embedding-dim": 16, "seed": 0}


def _run_dir(root: Path) -> Path:
    """A finished-run layout: a global model trained on all merchants' data, users kept local."""
    events = generate_federation(
        SyntheticSpec(
            num_merchants=5, num_users=1500, num_items=300, merchant_taste_shift=1.0, seed=2
        )
    )
    catalog, merchants = prepare_merchants(events, PartitionConfig(num_parties=5), root, seed=0)
    names = sorted(merchants)
    pooled, offsets = concat_user_item_data([merchants[n] for n in names])
    config = parse_run_config(SETTINGS)
    model = build_model(
        config.model,
        num_users=pooled.num_users,
        num_items=pooled.num_items,
        generator=torch.Generator().manual_seed(0),
    )
    train_local(
        model,
        pooled,
        dataclasses.replace(config.train, local_epochs=8),
        rng=np.random.default_rng(0),
    )
    torch.save(
        {n: p.detach().clone() for n, p in model.shared_parameters().items()},
        root / GLOBAL_MODEL_FILE,
    )
    (root / RUN_CONFIG_FILE).write_text(json.dumps({"run": SETTINGS}))
    for i, name in enumerate(names):
        rows = slice(int(offsets[i]), int(offsets[i + 1]))
        MerchantStore(root / "merchants" / name).save_local(
            {n: p.detach()[rows] for n, p in model.local_parameters().items()}
        )
    return root


def test_lambda_inf_reproduces_the_global_model_and_the_default_helps_most(
    tmp_path: Path,
) -> None:
    run_dir = _run_dir(tmp_path)
    table = personalisation_table(run_dir, (DEFAULT_LAMBDA,), epochs=2)
    assert table.lambdas == (math.inf, DEFAULT_LAMBDA)
    # lambda = inf is the global model with the merchant's users: evaluate it independently.
    config = parse_run_config(SETTINGS)
    shared = torch.load(run_dir / GLOBAL_MODEL_FILE, weights_only=True)
    for row in table.rows:
        store = MerchantStore(run_dir / "merchants" / row.merchant)
        data = store.load_data()
        model = build_model(
            config.model,
            num_users=data.num_users,
            num_items=data.num_items,
            generator=torch.Generator().manual_seed(0),
        )
        model.load_shared(shared)
        model.load_local(store.load_local() or {})
        direct = evaluate_model(
            model, data, k=10, rng=numpy_rng(0, "evaluate", row.merchant)
        ).means["ndcg@10"]
        assert row.ndcg[math.inf] == direct
    helped = table.helped(DEFAULT_LAMBDA)
    assert helped > len(table.rows) / 2, table.markdown()
    assert table.mean_ndcg(DEFAULT_LAMBDA) > table.mean_ndcg(math.inf), table.markdown()
    assert "| helped |" in table.markdown()


def test_the_personalisation_command_prints_the_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations.cli import main

    run_dir = _run_dir(tmp_path / "run")
    json_path = tmp_path / "t.json"
    argv = ["personalisation", str(run_dir), "--lambdas", "0.001", "--json", str(json_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| merchant | users | global (λ=∞) | λ=0.001 |" in out and "best lambda 0.001" in out
    payload = json.loads(json_path.read_text())
    assert payload["lambdas"] == ["inf", "0.001"] and len(payload["merchants"]) == 5
    assert main(["personalisation", str(run_dir), "--lambdas", "a b"]) == 2
    assert "--lambdas must be numbers" in capsys.readouterr().err
