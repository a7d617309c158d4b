"""Exit statuses: every error kind takes its code from ExitCode, one meaning per code."""

from __future__ import annotations

import importlib

from common.errors import ExitCode, FedrecError

# Modules that define error kinds (importing them registers the subclasses).
MODULES = (
    "client.deploy.coordinator_probe",
    "client.deploy.supernode",
    "common.run_signature",
    "server.rounds.records",
    "server.ops.flwr_cli",
    "server.ops.submit",
    "simulations.audit_report",
    "simulations.sweep",
)
# Codes raised from more than one place because they mean the same thing.
SHARED = {
    ExitCode.FAILED: {"FedrecError", "UnverifiedLedger"},  # a failed check, as audit verify
    ExitCode.FEDERATION_FAILED: {"FederationError", "RunFailed"},  # the run failed, either side
}


def _kinds() -> list[type[FedrecError]]:
    for module in MODULES:
        importlib.import_module(module)
    found, todo = [], [FedrecError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return found


def test_every_error_kind_exits_with_a_listed_code_and_codes_do_not_clash() -> None:
    by_code: dict[int, set[str]] = {}
    for kind in _kinds():
        assert isinstance(kind.exit_code, ExitCode), f"{kind.__name__}: {kind.exit_code!r}"
        if "exit_code" in vars(kind):  # a kind that sets its own code (others inherit a meaning)
            by_code.setdefault(kind.exit_code, set()).add(kind.__name__)
    for code, names in by_code.items():
        if len(names) > 1:
            assert names <= SHARED.get(ExitCode(code), set()), f"exit {code} means {names}"
    assert by_code[ExitCode.CONTROL_FAILED] == {"ControlError"}
    assert by_code[ExitCode.SWEEP_INCOMPLETE] == {"SweepError"}
    assert ExitCode.OK not in by_code
