"""A merchant joining a deployed federation: enrolment, node keys and the SuperNode.

:mod:`~client.deploy.cli` (``fedrec merchant``), :mod:`~client.deploy.enrolment`
(validate, pseudonymise, encode per catalog), :mod:`~client.deploy.pseudonym` (HMAC),
:mod:`~client.deploy.node_key`, :mod:`~client.deploy.coordinator_probe` (address,
CA and TLS checks), :mod:`~client.deploy.supernode` (runs Flower's SuperNode),
:mod:`~client.deploy.warm_start` (forked ClientApp processes) and
:mod:`~client.deploy.run_guard` (signed runs only).
"""
