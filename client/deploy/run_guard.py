"""A merchant runs only the federation's own signed jobs, and only those its policy accepts.

Flower's SuperNode executes every message of a run in a ``flwr-clientapp``
process, which pulls the message, the run's settings and its Flower App
Bundle (FAB), unpacks the FAB and imports the ClientApp it names. Anyone
who can submit runs to the coordinator's SuperLink could therefore run code
inside the merchant. This module is the check at the earliest point fedrec
controls in that process chain: right after Flower has pulled the task and
before it installs the FAB or imports anything from it. Both ways a merchant
starts ``flwr-clientapp`` (forked from the warm process, or the cold path of
``STATE/bin/flwr-clientapp``) go through :func:`main`.

A run is executed only when all of these hold:

1. the FAB is fedrec's own app: it ships no code (only ``pyproject.toml``
   and Flower's manifest) and names fedrec's installed ClientApp;
2. the run's ``run-signature`` verifies against the operator key this
   merchant pinned at enrolment (``STATE/operator.pub``) for exactly this FAB
   and these settings (:mod:`common.run_signature`);
3. the signed settings satisfy the merchant's ``policy.json``
   (:mod:`client.state.policy`).

Otherwise the task fails with a :class:`RunRefused` naming the reason (Flower
sends it to the coordinator as the reply's error), the merchant logs it and
writes a ``refusal`` entry to its ledger. Nothing of the FAB was installed or
imported.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import io
import logging
import tomllib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.constants import MERCHANT_PRIVACY_FILE, NODE_STATE_DIR, OPERATOR_PUBLIC_KEY_FILE
from common.errors import ConfigError, FedrecError
from common.privacy.signing import key_fingerprint
from common.run_signature import RunRefused, SignedRun, verify_run

logger = logging.getLogger(__name__)

FEDREC_CLIENTAPP = "client.client_app:app"
FAB_FILES = frozenset({"pyproject.toml", ".info/CONTENT"})  # all a fedrec FAB may hold
REFUSALS_LOG = "refused-runs.log"


# --- the operator's key, pinned at enrolment ---------------------------------------------
def read_operator_key(path: Path) -> str:
    """The base64 Ed25519 public key in ``path`` (first word of its first line)."""
    try:
        text = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the operator key {path}: {exc}.") from exc
    key = text[0] if text else ""
    try:
        if len(base64.b64decode(key, validate=True)) != 32:
            raise ValueError
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            f"{path} is not an operator public key (expected base64 of 32 bytes, as in the "
            "coordinator's operator.pub)."
        ) from exc
    return key


def operator_key_for(state: Path, given: Path | None) -> tuple[str, bool]:
    """The operator key a join at ``state`` runs under, and whether it is new; writes nothing.

    Refuses a missing key (none given, none pinned) and one that differs from the pinned key.
    """
    pinned_path = state / OPERATOR_PUBLIC_KEY_FILE
    pinned = read_operator_key(pinned_path) if pinned_path.is_file() else None
    if given is None:
        if pinned is None:
            raise ConfigError(
                "No operator key is pinned for this merchant: pass --operator-key operator.pub "
                "(the file the coordinator's operator gave you with ca.pem). Check its "
                "fingerprint with the operator before you join."
            )
        return pinned, False
    key = read_operator_key(given)
    if pinned is not None and pinned != key:
        raise ConfigError(
            f"{given} holds operator key {key_fingerprint(key)}, but this merchant pinned "
            f"{key_fingerprint(pinned)} at enrolment ({pinned_path}). A changed operator key is "
            "what an impostor would present: confirm it with the operator, then delete "
            f"{pinned_path} to pin the new one."
        )
    return key, pinned is None


def pin_operator_key(state: Path, given: Path | None) -> tuple[str, bool]:
    """Pin ``given`` in ``STATE/operator.pub``; (key, newly pinned). A different key is refused."""
    from common.fileio import atomic_write_text

    key, new = operator_key_for(state, given)
    if new:
        state.mkdir(parents=True, exist_ok=True)
        atomic_write_text(state / OPERATOR_PUBLIC_KEY_FILE, key + "\n")
    return key, new


# --- the checks ------------------------------------------------------------------------------
def check_fab(content: bytes, fab_hash: str) -> None:
    """Refuse a FAB that is not fedrec's own app (ships files, or names another ClientApp)."""
    actual = hashlib.sha256(content).hexdigest()
    if actual != fab_hash:
        raise RunRefused(f"the app bundle's content (sha256 {actual[:16]}) does not match its hash")
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as fab:
            names = set(fab.namelist())
            extra = sorted(names - FAB_FILES)
            if extra:
                shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
                raise RunRefused(
                    f"the app bundle ships its own files ({shown}); a merchant runs only fedrec's "
                    "installed ClientApp"
                )
            project = tomllib.loads(fab.read("pyproject.toml").decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RunRefused(f"the app bundle is not a readable fedrec app ({exc})") from exc
    component = project.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    named = component.get("clientapp") if isinstance(component, dict) else None
    if named != FEDREC_CLIENTAPP:
        raise RunRefused(
            f"the app names ClientApp {named!r}; a merchant runs only fedrec's {FEDREC_CLIENTAPP!r}"
        )


def check_run(
    state: Path, *, run_config: Mapping[str, Any], fab_content: bytes, fab_hash: str
) -> SignedRun:
    """Everything a run must satisfy before it executes here; :class:`RunRefused` otherwise."""
    from client.state.policy import load_policy
    from common.config import parse_run_config

    check_fab(fab_content, fab_hash)
    pinned_path = state / OPERATOR_PUBLIC_KEY_FILE
    if not pinned_path.is_file():
        raise RunRefused(
            f"no operator key is pinned in {pinned_path}; rejoin with `fedrec merchant join "
            "--operator-key operator.pub`"
        )
    signed = verify_run(
        run_config=run_config, fab_sha256=fab_hash, pinned_key=read_operator_key(pinned_path)
    )
    run = parse_run_config({k: v for k, v in run_config.items()})
    try:
        policy = load_policy(state / "policy.json")
    except FedrecError as exc:
        raise RunRefused(f"this merchant's policy is unreadable ({exc})") from exc
    lifetime = run.privacy.enabled and policy.epsilon_max is not None
    problems = policy.violations(run, spent=_spent(state) if lifetime else 0.0)
    if problems:
        raise RunRefused("; ".join(problems))
    return signed


def _spent(state: Path) -> float:
    from common.privacy.accountant import PrivacyAccount

    account = PrivacyAccount.load(state / MERCHANT_PRIVACY_FILE)
    return account.lifetime_epsilon() if account is not None else 0.0


def record_refusal(state: Path, *, reason: str, flower_run: int, run_name: str) -> None:
    """Log the refusal and write it to the merchant's ledger (never raises: the reply matters)."""
    from client.state.ledger import MerchantLedger
    from client.state.store import MerchantStore

    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    logger.error("refused Flower run %s (%s): %s", flower_run, run_name or "unnamed", reason)
    try:
        logs = state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / REFUSALS_LOG).open("a", encoding="utf-8") as log:
            log.write(f"{stamp} flower-run={flower_run} run={run_name or '-'} refused: {reason}\n")
        MerchantLedger(state, MerchantStore(state).name).refusal(
            {"run": run_name, "flower_run": flower_run, "round": 0, "release": "run"},
            reason=f"run refused before execution: {reason}",
        )
    except Exception:  # noqa: BLE001  (the refusal itself must still reach the coordinator)
        logger.exception("could not record the refusal of Flower run %s", flower_run)


# --- wiring into Flower's ClientApp process ---------------------------------------------------
def install() -> None:
    """Make Flower's ``flwr-clientapp`` check each task before installing its FAB."""
    import flwr.supernode.runtime.run_clientapp as runtime

    if getattr(runtime, "_fedrec_guarded", False):
        return
    pull, install_fab = runtime.pull_task_input, runtime.install_from_fab
    verdict: dict[str, RunRefused | None] = {"refusal": None}

    def guarded_pull(client: Any) -> Any:
        message, context, run, fab = pull(client)
        verdict["refusal"] = None
        state = context.node_config.get(NODE_STATE_DIR)
        name = str(context.run_config.get("output-dir", "")).rstrip("/").rsplit("/", 1)[-1]
        try:
            if not state:
                raise RunRefused("this node has no state-dir: it is not a fedrec merchant")
            check_run(
                Path(str(state)),
                run_config=dict(context.run_config),
                fab_content=fab.content,
                fab_hash=fab.hash_str,
            )
        except RunRefused as refusal:
            verdict["refusal"] = refusal
            if state:
                record_refusal(
                    Path(str(state)), reason=str(refusal), flower_run=run.run_id, run_name=name
                )
        return message, context, run, fab

    def guarded_install(content: bytes, *args: Any, **kwargs: Any) -> Any:
        refusal = verdict["refusal"]
        if refusal is not None:
            raise refusal  # Flower replies with this error; nothing of the FAB is touched
        return install_fab(content, *args, **kwargs)

    runtime.pull_task_input = guarded_pull
    runtime.install_from_fab = guarded_install  # type: ignore[assignment]
    runtime._fedrec_guarded = True  # type: ignore[attr-defined]


def main() -> None:
    """``flwr-clientapp`` with the guard installed (the warm child and the cold path)."""
    install()
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    flwr_clientapp()


if __name__ == "__main__":
    import sys

    sys.argv[0] = "flwr-clientapp"
    main()
