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
