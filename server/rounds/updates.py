"""What a round's messages weigh, and compressed updates turned back into parameters.

``payload_bytes`` is the size of a message's content as Flower serialises it
(protobuf ``RecordDict``): the bytes that cross the wire under the
Deployment Engine for that message, before TLS framing. The same figure is
reported under the Simulation Engine, where nothing crosses a wire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.compression import decompress, from_fields
from common.constants import ARRAYS_KEY, MERCHANT_KEY

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, Message


def payload_bytes(message: Message) -> int:
    from flwr.common.serde import recorddict_to_proto

    return int(recorddict_to_proto(message.content).ByteSize())


def decode_update(reply: Message, sent: ArrayRecord) -> None:
    """Replace a compressed update in ``reply`` by ``sent`` plus its decoded delta (in place).

    A reply declares its own encoding; a plain one is left as it is. This runs
    after the ledger has checked the digest of what was actually received.
    """
    from collections import OrderedDict

    import torch
    from flwr.app import ArrayRecord

    fields = reply.content.config_records.get(MERCHANT_KEY)
    config = from_fields(fields if fields is not None else {})
    if not config.enabled:
        return
    reference = {name: array.numpy() for name, array in sent.items()}
    encoded = {
        name: array.numpy() for name, array in reply.content.array_records[ARRAYS_KEY].items()
    }
    decoded = decompress(encoded, reference, config)
    reply.content[ARRAYS_KEY] = ArrayRecord(
        torch_state_dict=OrderedDict((n, torch.from_numpy(decoded[n])) for n in reference)
    )
