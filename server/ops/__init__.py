"""Coordinator operations: the processes and files around the round loop.

TLS certificates (:mod:`~server.ops.tls`), the coordinator directory and
admissions (:mod:`~server.ops.coordinator`, :mod:`~server.ops.operations`),
the SuperLink and its Control API (:mod:`~server.ops.superlink`,
:mod:`~server.ops.flwr_cli`), the public proxy (:mod:`~server.ops.proxy`),
signed run submission (:mod:`~server.ops.submit`, :mod:`~server.ops.operator_key`)
and the ``fedrec coordinator`` / ``fedrec run`` commands (:mod:`~server.ops.cli`).
"""
