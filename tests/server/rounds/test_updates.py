from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.compression import CompressionConfig, compress
from common.constants import ARRAYS_KEY, COMPRESSION_FIELD, MERCHANT_KEY, MERCHANT_NAME_FIELD
from server.rounds.updates import decode_update, payload_bytes


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(
        torch_state_dict=OrderedDict((n, torch.from_numpy(a)) for n, a in arrays.items())
    )


def _reply(arrays: dict[str, np.ndarray], encoding: str = "") -> Any:
    fields = {MERCHANT_NAME_FIELD: "m"} | ({COMPRESSION_FIELD: encoding} if encoding else {})
    content = RecordDict(
        {
            ARRAYS_KEY: _record(arrays),
            MERCHANT_KEY: ConfigRecord(fields),
            "metrics": MetricRecord({"n": 1}),
        }
    )
    return SimpleNamespace(content=content)  # what payload_bytes and decode_update read


def test_a_compressed_reply_becomes_global_plus_delta_and_weighs_less() -> None:
    rng = np.random.default_rng(0)
    sent = {"item_embedding": rng.normal(size=(300, 16)).astype(np.float32)}
    trained = {
        "item_embedding": sent["item_embedding"]
        + 0.01 * rng.normal(size=(300, 16)).astype(np.float32)
    }
    plain = _reply(trained)
    compressed = _reply(compress(trained, sent, CompressionConfig("int8")), encoding="int8")
    assert payload_bytes(compressed) < payload_bytes(plain) / 3
    assert payload_bytes(plain) >= 300 * 16 * 4

    decode_update(compressed, _record(sent))
    decoded = compressed.content.array_records[ARRAYS_KEY]["item_embedding"].numpy()
    assert decoded.shape == (300, 16)
    np.testing.assert_allclose(decoded, trained["item_embedding"], atol=0.01 * 5 / 127)

    before = plain.content.array_records[ARRAYS_KEY]["item_embedding"].numpy().copy()
    decode_update(plain, _record(sent))  # a plain update is left as it is
    np.testing.assert_array_equal(
        plain.content.array_records[ARRAYS_KEY]["item_embedding"].numpy(), before
    )
