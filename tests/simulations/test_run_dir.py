import pytest

from common.errors import RunDirError
from simulations.run_dir import staged_run_dir


def test_successful_run_appears_whole(tmp_path):
    target = tmp_path / "run"
    with staged_run_dir(target) as staging:
        (staging / "a.txt").write_text("x")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_failed_run_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), staged_run_dir(tmp_path / "run") as staging:
        (staging / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_run_is_not_overwritten_without_consent(tmp_path):
    (tmp_path / "run").mkdir()
    with (
        pytest.raises(RunDirError, match="already exists.*--overwrite"),
        staged_run_dir(tmp_path / "run"),
    ):
        pass


def test_a_failed_run_that_wrote_a_ledger_is_kept_as_incomplete(tmp_path):
    with pytest.raises(RuntimeError), staged_run_dir(tmp_path / "run") as staging:
        (staging / "ledger").mkdir()
        (staging / "ledger" / "federation.jsonl").write_text("{}\n")
        raise RuntimeError("coordinator failed")
    assert not (tmp_path / "run").exists()
    kept = tmp_path / "run.incomplete" / "ledger" / "federation.jsonl"
    assert kept.read_text() == "{}\n"


def test_party_keys_live_beside_the_run_directory_and_vanish_even_on_failure(tmp_path):
    import stat

    from common.privacy.signing import Signer
    from simulations.party_keys import ephemeral_party_keys

    run = tmp_path / "runs" / "demo"
    with pytest.raises(RuntimeError), ephemeral_party_keys(run) as keys:
        assert keys.root.parent == run.parent and not keys.root.is_relative_to(run)
        assert stat.S_IMODE(keys.root.stat().st_mode) == 0o700
        Signer.load_or_create(keys.coordinator)
        Signer.load_or_create(keys.merchants / "merchant-00" / "ledger.key")
        raise RuntimeError("the run failed")
    assert list(run.parent.iterdir()) == []
