"""The merchant's side of SecAgg+: Flower's ``secaggplus_mod`` around the ordinary train handler.

Only SecAgg+ protocol messages go through the mod; query, evaluate and plain
train messages pass untouched. In the protocol's masking stage the mod calls
the train handler; this module translates between the two layouts:

- in: the legacy ``fitins.*`` message plus fedrec's records (named global
  arrays, round plan, item prior, ledger cursor) becomes an ordinary train
  message;
- out: the handler's reply becomes a legacy ``fitres`` whose parameters are the
  **delta** from the global model, with weight 1 (0 for a budget refusal, which
  then contributes nothing). fedrec's own records (metrics, merchant, ledger)
  stay in the reply and reach the coordinator in clear; the mod empties every
  array record, so the update itself travels only masked.

A delta value outside the protocol's clipping range would be clipped silently
by SecAgg+'s quantiser; here it is an error, raised before anything is masked.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from common.constants import ARRAYS_KEY, DP_REFUSED, METRICS_KEY
from common.errors import FedrecError

if TYPE_CHECKING:
    from flwr.app import Context, Message
    from flwr.clientapp.typing import ClientAppCallable

SECAGG_CONFIGS = "secaggplus_configs"  # Flower's record key for protocol messages
SECAGG_STATE = "secaggplus_state"  # where the mod keeps this node's protocol state


class SecAggRangeError(FedrecError):
    """An update value lies outside the SecAgg+ quantisation range."""


def is_secagg(message: Message) -> bool:
    return message.has_content() and SECAGG_CONFIGS in message.content.config_records


def check_range(deltas: dict[str, np.ndarray], *, clipping_range: float) -> None:
    """Refuse a delta SecAgg+ would clip: name the parameter, the value and the fix."""
    for name, delta in deltas.items():
        if delta.size == 0:
            continue
        peak = float(np.max(np.abs(delta)))
        if not np.isfinite(peak):
            raise SecAggRangeError(
                f"The update of {name!r} is not finite (nan or inf); it is not sent. Lower the "
                "learning rate."
            )
        if peak > clipping_range:
            wider = 2.0 ** math.ceil(math.log2(peak))
            raise SecAggRangeError(
                f"The update of {name!r} has a value of magnitude {peak:.4g}, outside the SecAgg+ "
                f"quantisation range +-{clipping_range:g}; SecAgg+ would clip it silently, so "
                "it is not sent. Raise secagg-clip-range on the coordinator (e.g. "
                f"--set secagg-clip-range={wider:g}; the quantisation step grows with it), or "
                "lower the learning rate."
            )


def _as_plain(message: Message) -> None:
    """Turn the legacy train message into an ordinary fedrec train message, in place."""
    from flwr.app import RecordDict

    kept = {
        k: v
        for k, v in message.content.items()
        if not str(k).startswith(("fitins.", SECAGG_CONFIGS))
    }
    message.content = RecordDict(kept)


def _legacy_reply(
    instruction: Message, reply: Message, global_arrays: dict[str, np.ndarray], context: Context
) -> Message:
    """A fitres carrying the delta (weight 1) or zeros (weight 0, a refusal)."""
    from flwr.app import Message as FlowerMessage
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    content = reply.content
    refused = content.metric_records[METRICS_KEY].get(DP_REFUSED, 0) == 1
    names = list(global_arrays)
    if refused:
        deltas = {n: np.zeros_like(a) for n, a in global_arrays.items()}
    else:
        sent = content.array_records[ARRAYS_KEY].to_torch_state_dict()
        deltas = {n: sent[n].numpy().astype(np.float64) - global_arrays[n] for n in names}
        state = context.state.config_records.get(SECAGG_STATE)
        clipping_range = float(state["clipping_range"]) if state else 8.0  # type: ignore[arg-type]
        check_range(deltas, clipping_range=clipping_range)
    fitres = FitRes(
        status=Status(code=Code.OK, message="refused" if refused else ""),
        parameters=ndarrays_to_parameters([deltas[n] for n in names]),
        num_examples=0 if refused else 1,
        metrics={},
    )
    legacy = compat.fitres_to_recorddict(fitres, keep_input=True)
    for key, record in content.items():
        if key != ARRAYS_KEY:
            legacy[key] = record
    return FlowerMessage(legacy, reply_to=instruction)


def secagg_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A client mod: SecAgg+ for protocol messages, pass-through for everything else."""
    if not is_secagg(message):
        return call_next(message, context)
    from flwr.client.mod import secaggplus_mod

    def masked_stage(legacy: Message, ctx: Context) -> Message:
        global_arrays = {
            n: t.numpy().astype(np.float64)
            for n, t in legacy.content.array_records[ARRAYS_KEY].to_torch_state_dict().items()
        }
        _as_plain(legacy)
        reply = call_next(legacy, ctx)
        if reply.has_error():
            return reply
        return _legacy_reply(legacy, reply, global_arrays, ctx)

    return secaggplus_mod(message, context, masked_stage)
