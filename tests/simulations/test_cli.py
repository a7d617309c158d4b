"""The `fedrec` command: malformed input errors, and the MovieLens flow end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from common.constants import MERCHANT_OPTIMIZER_FILE, MERCHANTS_DIR
from common.recipes import REAL_LOG_DEFAULTS
from simulations.cli import main
from simulations.synthetic import SyntheticSpec, generate_federation

HEADER = "user_id,item_id,timestamp,event_type,value\n"
MALFORMED = {
    # name: (file name, content or None for "no file", --format, expected phrase, expected line)
    "missing file": ("absent.csv", None, "csv", "file not found", None),
    "empty file": ("empty.csv", "", "csv", "file is empty", None),
    "header only": ("header.csv", HEADER, "csv", "no data rows", None),
    "missing column": (
        "nocol.csv",
        "user_id,item_id\nu1,i1\n",
        "csv",
        "missing required column(s) 'timestamp'",
        None,
    ),
    "duplicate header": (
        "dup.csv",
        "user_id,item_id,timestamp,timestamp\nu,i,1,2\n",
        "csv",
        "duplicate column name 'timestamp'",
        1,
    ),
    "non-numeric timestamp": (
        "ts.csv",
        HEADER + "u1,i1,10,view,1\nu1,i2,soon,view,1\n",
        "csv",
        "timestamp 'soon' is not a valid time",
        3,
    ),
    "NaN rating": (
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,10\n1,3,nan,11\n",
        "movielens-latest",
        "value 'nan' is not a finite",
        3,
    ),
    "wrong field count": (
        "fields.csv",
        HEADER + "u1,i1,10,view,1\nu1,i2,11,view,1,extra\n",
        "csv",
        "wrong number of fields",
        3,
    ),
    "empty user id": (
        "uid.csv",
        HEADER + "u1,i1,10,view,1\n,i2,11,view,1\n",
        "csv",
        "empty user_id",
        3,
    ),
    "unknown event type": (
        "ev.csv",
        HEADER + "u1,i1,10,like,1\n",
        "csv",
        "unknown event_type 'like'",
        2,
    ),
    "not UTF-8": ("latin.csv", None, "csv", "not valid UTF-8", 2),
    "repeated header": (
        "cat.csv",
        HEADER + "u1,i1,10,view,1\n" + HEADER + "u2,i1,11,view,1\n",
        "csv",
        "repeated header line",
        3,
    ),
    "ml-1m file read as csv": ("ratings.dat", "1::10::5::978300760\n", "csv", "movielens-1m", None),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_gives_one_clear_paragraph_and_no_run_dir(case, tmp_path, capsys):
    name, content, fmt, phrase, line = MALFORMED[case]
    path = tmp_path / name
    if case == "not UTF-8":
        path.write_bytes(HEADER.encode() + "u1,caf\xe9,10,view,1\n".encode("latin-1"))
    elif content is not None:
        path.write_text(content)
    runs = tmp_path / "runs"

    code = main(
        [
            "simulate",
            "--data",
            str(path),
            "--format",
            fmt,
            "--merchants",
            "2",
            "--out",
            str(runs / "r"),
        ]
    )

    err = capsys.readouterr().err
    assert code != 0
    assert str(path) in err and phrase in err
    if line is not None:
        assert f"line {line}:" in err
    assert "Traceback" not in err
    assert not runs.exists() or list(runs.iterdir()) == []


def test_unknown_format_lists_formats(tmp_path, capsys):
    path = tmp_path / "x.csv"
    path.write_text(HEADER + "u,i,1,view,1\n")
    assert main(["simulate", "--data", str(path), "--format", "tsv"]) != 0
    assert "movielens-latest" in capsys.readouterr().err


def _write_movielens_latest(path: Path) -> dict[str, set[str]]:
    events = generate_federation(
        SyntheticSpec(num_merchants=2, num_users=150, num_items=80, seed=9)
    )
    users = {u: str(i + 1) for i, u in enumerate(sorted(set(events.user_id)))}
    seen: dict[str, set[str]] = {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        for u, i, v, t in zip(
            events.user_id, events.item_id, events.value, events.timestamp, strict=True
        ):
            movie = str(int(i.split("-")[1]) + 1)
            writer.writerow([users[u], movie, f"{v:.1f}", int(t)])
            seen.setdefault(users[u], set()).add(movie)
    return seen


@pytest.mark.integration
def test_movielens_latest_simulate_then_recommend(tmp_path, capsys):
    ratings = tmp_path / "ratings.csv"
    seen = _write_movielens_latest(ratings)
    run_dir, recs = tmp_path / "run", tmp_path / "recs.csv"

    code = main(
        [
            "simulate",
            "--data",
            str(ratings),
            "--format",
            "movielens-latest",
            "--merchants",
            "3",
            "--rounds",
            "2",
            "--out",
            str(run_dir),
            "--cpus",
            "2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "federated" in out
    # a real log, privacy off, no model chosen: the tuned real-log recipe, and it says so
    assert "HISTORY dim 128, fedavgm" in out and "recipe: real-log defaults" in out
    kept = sorted((run_dir / MERCHANTS_DIR).glob(f"*/{MERCHANT_OPTIMIZER_FILE}"))
    steps = [torch.load(p, weights_only=True)["adam"]["state"][0]["step"].item() for p in kept]
    assert steps == [2 * REAL_LOG_DEFAULTS["local-steps"]] * 3  # Adam carried over both rounds
    assert main(["recommend", str(run_dir), "--k", "7", "--out", str(recs)]) == 0

    with recs.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["user_id", "item_id", "rank", "score"]
    by_user: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"], []).append(row)
    assert set(by_user) == set(seen)  # every user, in the original keys
    for user, items in by_user.items():
        assert [int(r["rank"]) for r in items] == list(range(1, 8))  # exactly K rows
        assert not {r["item_id"] for r in items} & seen[user]  # nothing already seen
        scores = np.array([float(r["score"]) for r in items])
        assert np.all(np.diff(scores) <= 0)
