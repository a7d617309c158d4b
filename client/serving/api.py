"""The serving contract, ``recommender.proto``, compiled by grpcio-tools on first use.

No generated file is kept in the repository: :func:`grpc.protos_and_services`
builds the message and service modules from the ``.proto`` shipped in the
package, so the contract and the code can never drift apart.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from types import ModuleType

PROTO = "client/serving/recommender.proto"
HEALTH_SERVICE = "fedrec.serving.v1.Recommender"  # the name the health service reports on


@functools.cache
def stubs() -> tuple[ModuleType, ModuleType]:
    """``(messages, services)`` modules generated from :data:`PROTO`."""
    import grpc

    root = str(Path(__file__).resolve().parents[2])  # the directory that holds client/
    if root not in sys.path:
        sys.path.append(root)
    messages, services = grpc.protos_and_services(PROTO)
    return messages, services
