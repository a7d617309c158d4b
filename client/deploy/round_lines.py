"""The merchant's terminal during a run: one fedrec line per release, read from its own ledger.

Flower's SuperNode and ClientApp lines go to ``STATE/logs/supernode.log``
(``merchant join --verbose`` shows them too). What a merchant wants to see is
what its node did: which round it trained or refused, the epsilon it has
spent so far, and which model it published for ``fedrec serve``. All of that
is in the merchant's privacy ledger, written by the ClientApp before anything
leaves, so :class:`LedgerFollower` reads the entries appended since it last
looked and :func:`describe` turns each into one line. Reading is read-only:
the ledger is never opened for writing here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.constants import MERCHANT_MODELS_DIR
from common.privacy.ledger import COMMIT, NON_DP_RELEASE, REFUSAL

EVALUATION_RELEASE = "evaluation-metrics"
COUNTS_RELEASE = "item-counts"
COUNTS_TOP_UP = "item-counts-top-up"


def _spent(body: dict[str, Any]) -> str:
    """'epsilon 1.234 of 3 spent (delta 1e-06, RDP)' from a DP release's ledger body; after
    earlier runs, the run's own epsilon of its budget, then the lifetime figure."""
    accountant = str(body.get("accountant", ""))
    lifetime = body.get(f"epsilon_{accountant}", body.get("epsilon"))
    runs = body.get("runs_composed", 1)
    epsilon = body.get("run_epsilon", lifetime) if runs > 1 else lifetime
    budget = body.get("epsilon_max")
    shown = f"{float(epsilon):.3f}" if isinstance(epsilon, (int, float)) else "?"
    of = f" of {budget:g}" if isinstance(budget, (int, float)) else ""
    over = (
        f"; lifetime epsilon {float(lifetime):.3f} over {runs} runs"
        if runs > 1 and isinstance(lifetime, (int, float))
        else ""
    )
    return (
        f"epsilon {shown}{of} spent{over} (delta {body.get('delta', '?'):g}, {accountant.upper()})"
    )


def _metric(metrics: dict[str, Any]) -> str:
    name = next((k for k in sorted(metrics) if k.startswith("ndcg@")), "")
    return f", {name} {float(metrics[name]):.4f}" if name else ""


def describe(kind: str, body: dict[str, Any], *, published: str = "") -> str:
    """One line for a ledger entry a merchant's terminal shows; '' for bookkeeping entries."""
    run, server_round = body.get("run") or "run", body.get("round", "?")
    where = f"{run} round {server_round}" if server_round != 0 else f"{run} item counts"
    if kind == REFUSAL:
        return f"{where}: refused, nothing released: {body.get('reason', '')}"
    if kind == COMMIT:
        if body.get("release") == COUNTS_RELEASE:
            return f"{run}: item counts released with DP; {_spent(body)}"
        if body.get("release") == COUNTS_TOP_UP:
            return (
                f"{run}: item counts topped up with DP (the federation trains no model); "
                f"{_spent(body)}"
            )
        return f"{where}: trained, update released with DP; {_spent(body)}"
    if kind == NON_DP_RELEASE:
        metrics = body.get("non_dp_metrics") or {}
        if body.get("release") == EVALUATION_RELEASE:
            served = f"; model {published} published for `fedrec serve`" if published else ""
            return f"{where}: evaluated the global model{_metric(metrics)}{served}"
        return f"{where}: trained, update released without DP"
    return ""


class LedgerFollower:
    """The entries appended to a merchant's ledger since the last :meth:`lines` call."""

    def __init__(self, state: Path, *, ledger: Path) -> None:
        self.state = state
        self.path = ledger
        # Start at the current end: a join shows what happens from now on, not past runs.
        self.offset = ledger.stat().st_size if ledger.is_file() else 0

    def _published(self) -> str:
        current = self.state / MERCHANT_MODELS_DIR / "CURRENT"  # client.serving.model_dir
        try:
            return current.read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def lines(self) -> list[str]:
        """Readable lines for every complete entry appended since the last call."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        shown = []
        for raw in complete.splitlines():
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a repaired torn line; the verifier reports it, not the terminal
            line = describe(
                str(entry.get("kind", "")), entry.get("body") or {}, published=self._published()
            )
            if line:
                shown.append(line)
        return shown
