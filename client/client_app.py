"""Flower ClientApp: translates Messages to :class:`client.merchant.Merchant` calls.

A reply carries only what a merchant may release: the shared parameters
(``arrays``), plain metrics and counts (``metrics``) and the merchant's public
name (``merchant``). User parameters stay in the merchant's state directory.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client.merchant import Merchant, PrivacyReport, SharedArrays
from client.secagg import secagg_mod
from client.state import MerchantStore
from common.compression import compress, from_fields
from common.config import RoundPlan, RunConfig, parse_run_config, round_plan_from_record
from common.constants import (
    ARRAYS_KEY,
    CATALOG_ACTION,
    CATALOG_DIGEST_FIELD,
    CATALOG_ITEMS_FIELD,
    CATALOG_KEY,
    CLIENT_SECONDS,
    CLIENT_STARTUP,
    COMPRESSION_FIELD,
    CONFIG_KEY,
    DP_ACCOUNTANT_FIELD,
    DP_CLIP,
    DP_CLIPPED,
    DP_COUNT_NOISE,
    DP_DELTA,
    DP_EPSILON,
    DP_EPSILON_MAX,
    DP_NOISE,
    DP_REASON_FIELD,
    DP_REFUSED,
    DP_SAMPLE_RATE,
    DP_STEPS,
    DP_UNIT_FIELD,
    EVAL_SECONDS,
    EVAL_USERS,
    ITEM_COUNTS_KEY,
    ITEM_PRIOR_KEY,
    LEDGER_ACK,
    LEDGER_ENTRIES_FIELD,
    LEDGER_HAVE,
    LEDGER_KEY,
    MERCHANT_KEY,
    MERCHANT_NAME_FIELD,
    METRICS_KEY,
    RUN_NAME_FIELD,
    SECAGG_FIELD,
    TRAIN_LOSS,
    TRAIN_SECONDS,
    TRAIN_STEPS,
    TRAIN_USERS,
    WEIGHT_KEY,
)
from common.errors import ConfigError
from common.models.prior import ItemPrior
from common.privacy.accountant import PrivacyBudgetExceeded, PrivacyRefused
from common.privacy.ledger import update_digest
from common.run_signature import RunRefused

logger = logging.getLogger(__name__)

PARTITION_ID = "partition-id"
STATE_DIR = "state-dir"  # node config of a deployed merchant (``fedrec merchant join --state``)


def _resolve_merchant(config: RunConfig, context: Context) -> Merchant:
    """This node's merchant: its ``state-dir`` (deployment), or its ``partition-id`` directory
    under ``merchants-dir`` (simulation)."""
    state = context.node_config.get(STATE_DIR)
    if state:
        return Merchant(MerchantStore(Path(str(state))), config.model, seed=config.federation.seed)
    if not config.merchants_dir:
        raise ConfigError(
            "merchants-dir is not set: the ClientApp needs prepared merchant directories. "
            "Run `fedrec simulate` (it prepares them) or pass --run-config merchants-dir=DIR."
        )
    root = Path(config.merchants_dir)
    merchants = _merchant_dirs(root)
    partition = int(context.node_config.get(PARTITION_ID, 0))
    if partition >= len(merchants):
        raise ConfigError(
            f"partition-id {partition} has no merchant directory in {root} "
            f"({len(merchants)} found); run as many SuperNodes as merchants."
        )
    name = merchants[partition]
    keys = Path(config.merchant_keys_dir) / name if config.merchant_keys_dir else None
    return Merchant(
        MerchantStore(root / name, key_dir=keys), config.model, seed=config.federation.seed
    )


def _merchant_dirs(root: Path) -> tuple[str, ...]:
    """Sorted names of the merchant directories under ``root`` (none if it is not a folder).

    Listed once per process while ``root`` is unchanged (same mtime and link count): with
    thousands of one-user clients, listing on every message made each call O(clients).
    """
    try:
        stat = root.stat()
    except OSError:
        return ()
    return _listing(str(root), stat.st_mtime_ns, stat.st_nlink)


@functools.lru_cache(maxsize=8)
def _listing(root: str, mtime_ns: int, nlink: int) -> tuple[str, ...]:
    if not os.path.isdir(root):
        return ()
    with os.scandir(root) as entries:
        return tuple(sorted(entry.name for entry in entries if entry.is_dir()))


def _shared_from(message: Message) -> SharedArrays:
    record = message.content.array_records[ARRAYS_KEY]
    return {name: tensor.numpy() for name, tensor in record.to_torch_state_dict().items()}


def _int(record: ConfigRecord, key: str) -> int:
    value = record.get(key)
    if not isinstance(value, (int, float)):
        raise ConfigError(f"The coordinator's message lacks an integer {key!r} (got {value!r}).")
    return int(value)


def _prior_from(message: Message) -> ItemPrior | None:
    """The coordinator's public item prior (trained items + private counts), if it sent one."""
    if ITEM_PRIOR_KEY not in message.content.array_records:
        return None
    record = message.content.array_records[ITEM_PRIOR_KEY]
    return ItemPrior(
        counts=record["counts"].numpy().astype("float64"),
        trained=record["trained"].numpy().astype("int64"),
    )


def _privacy_metrics(report: PrivacyReport | None) -> dict[str, float]:
    if report is None:
        return {}
    return {
        DP_EPSILON: report.epsilon,
        DP_DELTA: report.delta,
        DP_EPSILON_MAX: report.epsilon_max,
        DP_NOISE: report.noise_multiplier,
        DP_COUNT_NOISE: report.count_noise_multiplier,
        DP_CLIP: report.max_grad_norm,
        DP_SAMPLE_RATE: report.sample_rate,
        DP_STEPS: report.steps,
    }


def _reply(
    message: Message,
    merchant: Merchant,
    metrics: dict[str, float],
    arrays: dict[str, ArrayRecord] | None = None,
    *,
    privacy: PrivacyReport | None = None,
    refusal: str = "",
    extra: dict[str, dict[str, str]] | None = None,
    encoding: str = "",
) -> Message:
    fields: dict[str, str] = {MERCHANT_NAME_FIELD: merchant.name}
    if encoding:
        fields[COMPRESSION_FIELD] = encoding
    if privacy is not None:
        fields[DP_UNIT_FIELD] = privacy.unit
        fields[DP_ACCOUNTANT_FIELD] = privacy.accountant
    if refusal:
        fields[DP_REASON_FIELD] = refusal
    content = RecordDict(
        {
            METRICS_KEY: MetricRecord(  # type: ignore[arg-type]
                {**metrics, **_privacy_metrics(privacy)}
            ),
            MERCHANT_KEY: ConfigRecord(fields),  # type: ignore[arg-type]
        }
    )
    for key, record in (arrays or {}).items():
        content[key] = record
    for key, fields_ in (extra or {}).items():
        content[key] = ConfigRecord(fields_)  # type: ignore[arg-type]
    if LEDGER_KEY in message.content.config_records:  # the coordinator keeps a ledger
        told = message.content.config_records[LEDGER_KEY]
        have, ack = told.get(LEDGER_HAVE, -1), told.get(LEDGER_ACK, "")
        lines = merchant.ledger.lines_after(
            int(have) if isinstance(have, (int, float)) else -1,
            ack=ack if isinstance(ack, str) else "",
        )
        if lines:
            content[LEDGER_KEY] = ConfigRecord({LEDGER_ENTRIES_FIELD: lines})  # type: ignore[dict-item]
    return Message(content=content, reply_to=message)


def _refuse(
    message: Message, merchant: Merchant, plan: RoundPlan, refusal: PrivacyRefused
) -> Message:
    """The explicit refusal reply (its reason reaches the coordinator); nothing was released.

    Only a budget refusal carries the privacy report: after any other refusal
    (an account that disagrees with the ledger, a state used by another run)
    the account is not one to report from.
    """
    report = merchant.report(plan) if isinstance(refusal, PrivacyBudgetExceeded) else None
    return _reply(message, merchant, {DP_REFUSED: 1}, privacy=report, refusal=str(refusal))


def _process_age() -> float:
    """Seconds since this process started (Linux /proc; -1 elsewhere): its start-up cost."""
    import os
    import time

    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            started_ticks = float(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(float(x.split()[1]) for x in handle if x.startswith("btime"))
        return time.time() - (boot + started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return -1.0


def _run_name(record: ConfigRecord, context: Context) -> str:
    """The run's name in ledger entries: the coordinator's (stable across a resume) or Flower's."""
    name = record.get(RUN_NAME_FIELD)
    return str(name) if name else str(context.run_id)


def _plan(record: ConfigRecord, run: RunConfig, *, training: bool = False) -> RoundPlan:
    """The round plan a message carries; in a signed run it must be the plan the operator signed.

    :mod:`client.run_guard` checked the run's settings against the operator's
    signature and the merchant's policy; this binds each message's
    instructions (training, privacy, SecAgg+) to those same settings.
    """
    plan = round_plan_from_record(dict(record))
    if not run.run_signature:
        return plan
    differs = [
        what
        for what, sent, signed in (
            ("training settings", plan.train, run.train),
            ("privacy settings", plan.privacy, run.privacy),
            ("number of rounds", plan.num_rounds, run.federation.num_rounds),
        )
        if sent != signed
    ]
    if training and bool(record.get(SECAGG_FIELD, False)) != run.secagg.enabled:
        differs.append("secure aggregation")
    if differs:
        raise RunRefused(
            f"the coordinator's instructions differ from the signed run settings "
            f"({', '.join(differs)})"
        )
    return plan


def _torch_record(arrays: dict[str, object]) -> ArrayRecord:
    import numpy as np
    import torch

    return ArrayRecord(
        torch_state_dict=OrderedDict(
            (name, torch.from_numpy(np.ascontiguousarray(array))) for name, array in arrays.items()
        )
    )


def _publish_for_serving(
    state: Path, message: Message, context: Context, plan: ConfigRecord
) -> None:
    """Publish the received global model to ``STATE/models`` (atomically; serve hot-reloads it)."""
    from client.serving.model_dir import publish
    from common.constants import MERCHANT_CATALOG_FILE, MERCHANT_MODELS_DIR
    from common.data.catalog import ItemCatalog

    catalog_path = state / MERCHANT_CATALOG_FILE
    if not catalog_path.is_file():
        logger.warning(
            "no %s in %s; the global model is not kept for serving", MERCHANT_CATALOG_FILE, state
        )
        return
    record = message.content.array_records[ARRAYS_KEY]
    run_name = _run_name(plan, context) or "run"
    publish(
        state / MERCHANT_MODELS_DIR,
        settings=dict(context.run_config),
        shared=dict(record.to_torch_state_dict()),
        catalog=ItemCatalog.load(catalog_path),
        prior=_prior_from(message),
        label=f"{run_name}-round-{_int(plan, 'server-round'):04d}",
    )


def make_client_app(config: RunConfig | None = None, *, mods: Sequence[Mod] = ()) -> ClientApp:
    """A ClientApp bound to ``config``, or reading the run config when ``None`` (``flwr run``).

    ``mods`` are Flower client mods wrapped around every call (e.g. to inspect replies).
    """
    app = ClientApp(mods=[*mods, secagg_mod])  # outer mods see what actually leaves

    def settings(context: Context) -> RunConfig:
        return config if config is not None else parse_run_config(context.run_config)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        import time

        entered, age = time.perf_counter(), _process_age()
        run = settings(context)
        merchant = _resolve_merchant(run, context)
        record = message.content.config_records[CONFIG_KEY]
        plan = _plan(record, run, training=True)
        server_round = _int(record, "server-round")
        received = _shared_from(message)
        compression = from_fields(record)
        try:
            outcome = merchant.train(
                received,
                plan,
                server_round=server_round,
                prior=_prior_from(message),
                run=_run_name(record, context),
                secagg=bool(record.get(SECAGG_FIELD, False)),
            )
        except PrivacyRefused as refusal:
            # An explicit refusal, not an error: nothing was trained or released.
            return _refuse(message, merchant, plan, refusal)
        metrics: dict[str, float] = {
            WEIGHT_KEY: outcome.num_examples,
            TRAIN_STEPS: outcome.stats.steps,
            TRAIN_SECONDS: outcome.stats.seconds,
            CLIENT_STARTUP: age,
            CLIENT_SECONDS: time.perf_counter() - entered,
        }
        if outcome.privacy is None:  # data-dependent figures are released only without DP
            metrics[TRAIN_LOSS] = outcome.stats.loss
            metrics[TRAIN_USERS] = outcome.stats.users
        else:
            metrics[DP_CLIPPED] = outcome.stats.clipped_fraction
        # Compression encodes the finished (clipped, noised) update: post-processing.
        released: dict[str, Any] = (
            compress(outcome.shared, received, compression)
            if compression.enabled
            else dict(outcome.shared)
        )
        if outcome.reservation is not None:  # handed to Flower for sending: commit
            merchant.commit(outcome.reservation, released, metrics=metrics)
        else:
            shared_names, local_names = merchant.parameter_names()
            merchant.ledger.non_dp_release(
                run=_run_name(record, context),
                server_round=server_round,
                what="model-update",
                metrics=metrics,
                update_sha256=update_digest(released),
                released=shared_names,
                kept_local=local_names,
            )
        return _reply(
            message,
            merchant,
            metrics,
            {ARRAYS_KEY: _torch_record(released)},
            privacy=outcome.privacy,
            encoding=compression.kind if compression.enabled else "",
        )

    @app.query(CATALOG_ACTION)
    def catalog(message: Message, context: Context) -> Message:
        """Deployment set-up: encode this merchant's enrolled log through the federation catalog."""
        from client.enrolment import encode_for_catalog
        from common.data.catalog import ItemCatalog, catalog_digest

        state = context.node_config.get(STATE_DIR)
        if not state:
            raise ConfigError("A catalog was sent to a node without a state-dir (not a merchant).")
        record = message.content.config_records[CATALOG_KEY]
        keys = tuple(str(k) for k in record[CATALOG_ITEMS_FIELD])  # type: ignore[union-attr]
        digest = catalog_digest(keys)
        if digest != record[CATALOG_DIGEST_FIELD]:
            raise ConfigError("The federation catalog arrived damaged (its SHA-256 differs).")
        encode_for_catalog(Path(str(state)), ItemCatalog(keys=keys), digest=digest)
        merchant = _resolve_merchant(settings(context), context)
        return _reply(message, merchant, {}, extra={CATALOG_KEY: {CATALOG_DIGEST_FIELD: digest}})

    @app.query()
    def query(message: Message, context: Context) -> Message:
        """A private item-count release (once per training), recorded before it leaves."""
        run = settings(context)
        merchant = _resolve_merchant(run, context)
        plan = _plan(message.content.config_records[CONFIG_KEY], run)
        try:
            release = merchant.release_item_counts(
                plan, run=_run_name(message.content.config_records[CONFIG_KEY], context)
            )
        except PrivacyRefused as refusal:
            return _refuse(message, merchant, plan, refusal)
        merchant.commit(release.reservation, {"counts": release.counts}, metrics={})
        return _reply(
            message,
            merchant,
            {},
            {ITEM_COUNTS_KEY: _torch_record({"counts": release.counts})},
            privacy=release.privacy,
        )

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        import time

        started = time.perf_counter()
        run = settings(context)
        merchant = _resolve_merchant(run, context)
        plan = message.content.config_records[CONFIG_KEY]
        result = merchant.evaluate(
            _shared_from(message),
            k=_int(plan, "top-k"),
            server_round=_int(plan, "server-round"),
            prior=_prior_from(message),
            refit=_plan(plan, run).train,
        )
        state = context.node_config.get(STATE_DIR)
        if state:  # a deployed merchant keeps the model it evaluated, for `fedrec serve`
            _publish_for_serving(Path(str(state)), message, context, plan)
        metrics: dict[str, float] = dict(result.means)
        metrics[WEIGHT_KEY] = result.num_users
        metrics[EVAL_USERS] = result.num_users
        metrics[EVAL_SECONDS] = time.perf_counter() - started
        merchant.ledger.non_dp_release(
            run=_run_name(plan, context),
            server_round=_int(plan, "server-round"),
            what="evaluation-metrics",
            metrics=metrics,
        )
        return _reply(message, merchant, metrics)

    return app


app = make_client_app()
