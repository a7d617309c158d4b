"""Flower ClientApp: translates Messages to :class:`client.merchant.Merchant` calls.

A reply carries only what a merchant may release: the shared parameters
(``arrays``), plain metrics and counts (``metrics``) and the merchant's public
name (``merchant``). User parameters stay in the merchant's state directory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client.merchant import Merchant, SharedArrays
from client.state import MerchantStore
from common.config import RunConfig, parse_run_config, train_config_from_record
from common.constants import (
    ARRAYS_KEY,
    CONFIG_KEY,
    EVAL_SECONDS,
    EVAL_USERS,
    MERCHANT_KEY,
    MERCHANT_NAME_FIELD,
    METRICS_KEY,
    TRAIN_LOSS,
    TRAIN_SECONDS,
    TRAIN_STEPS,
    TRAIN_USERS,
    WEIGHT_KEY,
)
from common.errors import ConfigError

PARTITION_ID = "partition-id"


def _resolve_merchant(config: RunConfig, context: Context) -> Merchant:
    """Find this node's merchant directory: one per ``partition-id`` under ``merchants-dir``."""
    if not config.merchants_dir:
        raise ConfigError(
            "merchants-dir is not set: the ClientApp needs prepared merchant directories. "
            "Run `fedrec simulate` (it prepares them) or pass --run-config merchants-dir=DIR."
        )
    root = Path(config.merchants_dir)
    merchants = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    partition = int(context.node_config.get(PARTITION_ID, 0))
    if partition >= len(merchants):
        raise ConfigError(
            f"partition-id {partition} has no merchant directory in {root} "
            f"({len(merchants)} found); run as many SuperNodes as merchants."
        )
    return Merchant(MerchantStore(merchants[partition]), config.model, seed=config.federation.seed)


def _shared_from(message: Message) -> SharedArrays:
    record = message.content.array_records[ARRAYS_KEY]
    return {name: tensor.numpy() for name, tensor in record.to_torch_state_dict().items()}


def _int(record: ConfigRecord, key: str) -> int:
    value = record.get(key)
    if not isinstance(value, (int, float)):
        raise ConfigError(f"The coordinator's message lacks an integer {key!r} (got {value!r}).")
    return int(value)


def _reply(
    message: Message, merchant: Merchant, metrics: dict[str, float], arrays: ArrayRecord | None
) -> Message:
    content = RecordDict(
        {
            METRICS_KEY: MetricRecord(dict(metrics.items())),  # type: ignore[arg-type]
            MERCHANT_KEY: ConfigRecord({MERCHANT_NAME_FIELD: merchant.name}),
        }
    )
    if arrays is not None:
        content[ARRAYS_KEY] = arrays
    return Message(content=content, reply_to=message)


def make_client_app(config: RunConfig | None = None, *, mods: Sequence[Mod] = ()) -> ClientApp:
    """A ClientApp bound to ``config``, or reading the run config when ``None`` (``flwr run``).

    ``mods`` are Flower client mods wrapped around every call (e.g. to inspect replies).
    """
    app = ClientApp(mods=list(mods))

    def settings(context: Context) -> RunConfig:
        return config if config is not None else parse_run_config(context.run_config)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        import torch

        run = settings(context)
        merchant = _resolve_merchant(run, context)
        plan = message.content.config_records[CONFIG_KEY]
        outcome = merchant.train(
            _shared_from(message),
            train_config_from_record(dict(plan)),
            server_round=_int(plan, "server-round"),
        )
        arrays = ArrayRecord(
            torch_state_dict=OrderedDict(
                (name, torch.from_numpy(array)) for name, array in outcome.shared.items()
            )
        )
        metrics: dict[str, float] = {
            WEIGHT_KEY: outcome.num_examples,
            TRAIN_LOSS: outcome.stats.loss,
            TRAIN_STEPS: outcome.stats.steps,
            TRAIN_USERS: outcome.stats.users,
            TRAIN_SECONDS: outcome.stats.seconds,
        }
        return _reply(message, merchant, metrics, arrays)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        import time

        started = time.perf_counter()
        run = settings(context)
        merchant = _resolve_merchant(run, context)
        plan = message.content.config_records[CONFIG_KEY]
        result = merchant.evaluate(
            _shared_from(message), k=_int(plan, "top-k"), server_round=_int(plan, "server-round")
        )
        metrics: dict[str, float] = dict(result.means)
        metrics[WEIGHT_KEY] = result.num_users
        metrics[EVAL_USERS] = result.num_users
        metrics[EVAL_SECONDS] = time.perf_counter() - started
        return _reply(message, merchant, metrics, None)

    return app


app = make_client_app()
