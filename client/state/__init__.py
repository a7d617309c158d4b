"""What a merchant keeps on its own disk, durably: state, privacy ledger and policy.

:mod:`~client.state.store` (user embeddings, privacy account, optimizer state),
:mod:`~client.state.ledger` (reserve / commit / refusal / abort entries) and
:mod:`~client.state.policy` (the merchant's own budget and rules).
"""
