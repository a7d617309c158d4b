"""Verify ledgers without trusting anyone: chains, signatures, signed heads, countersignatures.

``verify_path`` takes a run directory (the federation ledger plus every
merchant ledger under ``merchants/``), a federation ledger, or one merchant
ledger, and returns a :class:`Verdict`: every problem found (the first bad
entry comes first, with its file, line, seq and the kind of problem), and
notes on what is incomplete but intact (a round reserved and never
committed, a run that did not close).

The checks, each in its own module:

* every ledger file on its own (sequence, hash chain, genesis, signatures,
  signed head, rollback against the countersigned head):
  :mod:`common.privacy.chain_check`;
* along every merchant chain, cumulative epsilon never decreases and each
  recorded figure equals what its reserved events give:
  :mod:`common.privacy.epsilon_check`;
* along the federation ledger, each client-level DP release is counted and
  its epsilon recomputed: :mod:`common.privacy.client_release_check`;
* whose ledger a merchant file is, and whether it holds what the coordinator
  recorded: :mod:`common.privacy.identity_check`;
* a run directory must not hold the private key of any party whose ledger it
  carries (with the key, anyone holding the directory could re-sign it):
  :mod:`common.privacy.exposed_keys`.

Here, across files: the coordinator's copies of each merchant's entries form
a valid chain under the merchant's key, and every countersigned round head
names an entry of that chain.

Limit, stated plainly: a party holding its own key can rewrite its whole
ledger and head consistently; only copies held by others (the federation
ledger for merchants, merchants' records for the coordinator) expose that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.constants import (
    FEDERATION_LEDGER_FILE,
    MERCHANT_LEDGER_FILE,
    MERCHANTS_DIR,
    RUN_LEDGER_DIR,
)
from common.errors import ConfigError
from common.privacy.chain_check import (
    ChainCheck,
    check_chain,
    check_countersigned,
    check_head,
    incomplete_reservations,
)
from common.privacy.client_release_check import check_client_releases
from common.privacy.epsilon_check import EpsilonReplay, check_epsilons
from common.privacy.exposed_keys import exposed_keys
from common.privacy.identity_check import (
    claimed_party,
    compare_with_recorded,
    duplicate_parties,
    identity_problems,
)
from common.privacy.ledger import (
    CLOSE,
    MERCHANT_ENTRIES,
    ROUND_HEAD,
    Entry,
    LedgerFile,
    Problem,
    read_ledger,
)


@dataclass
class Verdict:
    """The outcome of ``fedrec audit verify``."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parties: dict[str, int] = field(default_factory=dict)  # party -> entries verified
    keys: dict[str, str] = field(default_factory=dict)  # party -> public key of its genesis

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


def _verify_file(
    file: LedgerFile, verdict: Verdict, replay: EpsilonReplay | None = None
) -> ChainCheck:
    check = check_chain(file.entries, source=str(file.path), lines=file.lines)
    problems = file.problems + check.problems + check_head(file, check)
    if replay is not None and not check.problems:
        epsilons = check_epsilons(
            file.entries, source=str(file.path), replay=replay, lines=file.lines
        )
        problems += epsilons.problems
        verdict.notes += epsilons.notes
    problems += check_countersigned(file, check)
    verdict.problems += sorted(problems, key=lambda p: (p.line or 10**9, p.seq or 0))
    verdict.parties[check.party or str(file.path)] = len(file.entries)
    if check.party and check.public_key:
        verdict.keys.setdefault(check.party, check.public_key)
    verdict.notes += incomplete_reservations(file.entries, check.party or str(file.path))
    return check


def verify_merchant(path: Path) -> Verdict:
    verdict = Verdict(path=path)
    _verify_file(read_ledger(path), verdict, EpsilonReplay())
    return verdict


def _recorded_chains(fed: LedgerFile, verdict: Verdict) -> dict[str, list[Entry]]:
    chains: dict[str, list[Entry]] = {}
    for entry in fed.entries:
        if entry.kind != MERCHANT_ENTRIES:
            continue
        name = str(entry.body.get("merchant"))
        for raw in entry.body.get("entries", []):
            try:
                chains.setdefault(name, []).append(Entry.from_json(raw))
            except ValueError as exc:
                verdict.problems.append(
                    Problem("malformed", f"a recorded entry of {name}: {exc}", source=str(fed.path))
                )
    return chains


def _verify_recorded_chains(
    path: Path, chains: dict[str, list[Entry]], verdict: Verdict, replay: EpsilonReplay
) -> dict[str, str | None]:
    """Each merchant's entries as the coordinator received them; returns party -> key."""
    keys: dict[str, str | None] = {}
    for name, chain in sorted(chains.items()):
        source = f"{path} (entries of {name} as received)"
        check = check_chain(chain, source=source)
        verdict.problems += check.problems
        if check.party is not None and check.party != name:
            verdict.problems.append(
                Problem(
                    "party",
                    f"the coordinator recorded these entries as {name!r}'s, but their genesis "
                    f"names party {check.party!r}",
                    source=source,
                )
            )
        if not check.problems:
            epsilons = check_epsilons(chain, source=source, replay=replay)
            verdict.problems += epsilons.problems
            verdict.notes += epsilons.notes
        keys[name] = check.public_key
        if check.public_key:
            verdict.keys.setdefault(name, check.public_key)
    return keys


def _countersign_problems(
    path: Path, fed: LedgerFile, chains: dict[str, list[Entry]]
) -> list[Problem]:
    """Every round head the coordinator countersigned names an entry of the recorded chain."""
    problems: list[Problem] = []
    for entry in fed.entries:
        if entry.kind != ROUND_HEAD:
            continue
        for name, head in entry.body.get("heads", {}).items():
            chain = chains.get(name, [])
            seq = int(head.get("seq", -1))
            if not 0 <= seq < len(chain) or chain[seq].hash != head.get("hash"):
                problems.append(
                    Problem(
                        "countersign",
                        f"round {entry.body.get('round')} countersigns {name}'s entry seq {seq}, "
                        "which the recorded chain does not hold with that hash",
                        source=str(path),
                        seq=entry.seq,
                    )
                )
    return problems


def verify_federation(
    path: Path, merchant_files: Sequence[Path] = (), *, directory_names: bool = True
) -> Verdict:
    """The federation ledger, the merchant chains inside it, and merchants' own files.

    ``directory_names``: each merchant file must sit in a directory named after
    its party (a run directory's ``merchants/NAME/``).
    """
    verdict = Verdict(path=path)
    replay = EpsilonReplay()
    fed = read_ledger(path)
    if not _verify_file(fed, verdict).problems:
        verdict.problems += check_client_releases(fed.entries, source=str(path), lines=fed.lines)
    chains = _recorded_chains(fed, verdict)
    keys = _verify_recorded_chains(path, chains, verdict, replay)
    verdict.problems += _countersign_problems(path, fed, chains)
    if fed.entries and fed.entries[-1].kind != CLOSE:
        rounds = [e.body.get("round") for e in fed.entries if e.kind == ROUND_HEAD]
        last = rounds[-1] if rounds else "none"
        verdict.notes.append(
            f"the run did not close: INCOMPLETE after countersigned round {last} "
            "(the coordinator stopped, or the run is still going)"
        )
    claimed: dict[str, list[Path]] = {}
    for file_path in sorted(merchant_files):
        merchant = read_ledger(file_path)
        party = claimed_party(merchant)
        start = len(verdict.problems)
        check = _verify_file(merchant, verdict, replay)
        if party is None:
            continue  # check_chain named the missing genesis
        claimed.setdefault(party, []).append(file_path)
        # Who signed a file comes before what it says: its identity problems go first.
        verdict.problems[start:start] = identity_problems(
            merchant, party, check, chains, keys, directory_names=directory_names
        )
        if party in chains and check.public_key == keys.get(party):
            verdict.problems += compare_with_recorded(merchant, chains[party])
    verdict.problems += duplicate_parties(claimed)
    return verdict


def _merchant_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / MERCHANTS_DIR).glob(f"*/{MERCHANT_LEDGER_FILE}"))


def verify_path(path: Path) -> Verdict:
    """Verify a run directory, a federation ledger or a merchant ledger."""
    if path.is_dir():
        federation = path / RUN_LEDGER_DIR / FEDERATION_LEDGER_FILE
        if federation.is_file():
            verdict = verify_federation(federation, _merchant_files(path))
            verdict.problems += exposed_keys(path, verdict.keys)
            return verdict
        if (path / MERCHANT_LEDGER_FILE).is_file():
            return verify_merchant(path / MERCHANT_LEDGER_FILE)
        raise ConfigError(
            f"{path}: no ledger found (expected {RUN_LEDGER_DIR}/{FEDERATION_LEDGER_FILE} in a "
            f"run directory, or {MERCHANT_LEDGER_FILE} in a merchant directory)."
        )
    if not path.is_file():
        raise ConfigError(f"{path}: no such ledger file.")
    first = read_ledger(path)
    role = first.entries[0].body.get("role") if first.entries else None
    if role == "coordinator":
        return verify_federation(path, _merchant_files(path.parent.parent))
    return verify_merchant(path)
