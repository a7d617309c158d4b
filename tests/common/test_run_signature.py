"""The operator's run signature: it holds for exactly one app and one set of settings."""

from __future__ import annotations

import datetime as dt

import pytest

from common.config import RunConfig, to_run_config
from common.constants import RUN_SIGNATURE_SETTING
from common.privacy.signing import Signer, key_fingerprint
from common.run_signature import RunRefused, config_sha256, sign_run, verify_run

FAB = "ab" * 32


def _signed(signer: Signer, **changes: object) -> dict[str, object]:
    settings = {**to_run_config(RunConfig()), "privacy-unit": "user", "target-epsilon": 3.0}
    settings |= changes
    settings[RUN_SIGNATURE_SETTING] = sign_run(
        signer,
        run_name="weekly",
        fab_sha256=FAB,
        run_config=settings,
        now=dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC),
    )
    return settings


def test_a_signed_run_verifies_and_names_what_was_signed():
    operator = Signer.generate()
    signed = verify_run(
        run_config=_signed(operator), fab_sha256=FAB, pinned_key=operator.public_key
    )
    assert signed.run_name == "weekly"
    assert signed.signed_at == "2026-12-06T09:00:00+00:00"
    assert signed.operator_fingerprint == key_fingerprint(operator.public_key)


def test_the_digest_ignores_spelling_but_not_values():
    base = {**to_run_config(RunConfig()), "target-delta": 1e-6, "num-server-rounds": 20}
    respelled = {**base, "target-delta": "1e-06", "num-server-rounds": 20.0}
    assert config_sha256(base) == config_sha256(respelled)
    assert config_sha256(base) != config_sha256({**base, "target-delta": 1e-5})


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda s: s | {"target-epsilon": 30.0}, "settings differ"),
        (lambda s: s | {"privacy-unit": "off"}, "settings differ"),
        (lambda s: s | {RUN_SIGNATURE_SETTING: ""}, "not signed"),
        (lambda s: s | {RUN_SIGNATURE_SETTING: "%%%.abc"}, "malformed"),
    ],
)
def test_an_altered_or_missing_signature_is_refused(tamper, reason):
    operator = Signer.generate()
    with pytest.raises(RunRefused, match=reason):
        verify_run(
            run_config=tamper(_signed(operator)), fab_sha256=FAB, pinned_key=operator.public_key
        )


def test_another_key_or_another_app_is_refused():
    operator, impostor = Signer.generate(), Signer.generate()
    forged = _signed(impostor)
    with pytest.raises(RunRefused, match=key_fingerprint(impostor.public_key)):
        verify_run(run_config=forged, fab_sha256=FAB, pinned_key=operator.public_key)
    with pytest.raises(RunRefused, match="app bundle"):
        verify_run(
            run_config=_signed(operator), fab_sha256="cd" * 32, pinned_key=operator.public_key
        )
