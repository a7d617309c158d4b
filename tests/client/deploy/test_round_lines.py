"""The merchant's terminal: one line per release, read from its real ledger as it grows."""

import numpy as np

from client.deploy.round_lines import LedgerFollower
from common.models.prior import ItemPrior
from tests.client.test_private_merchant import PLAN, _global, _merchant, data  # noqa: F401


def test_each_release_becomes_one_line_with_the_epsilon_spent_so_far(tmp_path, data):  # noqa: F811
    merchant = _merchant(tmp_path, data)
    merchant.ledger.ledger  # genesis written before the node starts: not shown  # noqa: B018
    follower = LedgerFollower(merchant.store.directory, ledger=merchant.ledger.path)
    assert follower.lines() == []

    counts = merchant.release_item_counts(PLAN, run="spring")
    merchant.commit(counts.reservation, {"counts": counts.counts}, metrics={})
    prior = ItemPrior(counts=counts.counts, trained=np.arange(data.num_items))
    outcome = merchant.train(
        _global(data.num_items), PLAN, server_round=1, prior=prior, run="spring"
    )
    merchant.commit(outcome.reservation, outcome.shared, metrics={})
    lines = follower.lines()

    assert len(lines) == 2  # reservations are bookkeeping; each commit is one line
    assert lines[0].startswith("spring: item counts released with DP; epsilon ")
    assert lines[1].startswith("spring round 1: trained, update released with DP; epsilon ")
    spent = float(lines[1].split("epsilon ")[1].split(" ")[0])
    assert spent == round(outcome.privacy.epsilon, 3)
    assert "of 2 spent (delta 1e-05, RDP)" in lines[1]
    assert follower.lines() == []  # nothing new, nothing shown twice

    merchant.ledger.non_dp_release(
        run="spring", server_round=1, what="evaluation-metrics", metrics={"ndcg@10": 0.0412}
    )
    (merchant.store.directory / "models").mkdir()
    (merchant.store.directory / "models" / "CURRENT").write_text("spring-round-0001")
    assert follower.lines() == [
        "spring round 1: evaluated the global model, ndcg@10 0.0412; model spring-round-0001 "
        "published for `fedrec serve`"
    ]

    second = _merchant(tmp_path, data)  # a second run
    again = second.release_item_counts(PLAN, run="summer")
    second.commit(again.reservation, {"counts": again.counts}, metrics={})
    (line,) = follower.lines()
    account = second.account(PLAN)
    assert line == (
        f"summer: item counts released with DP; epsilon {account.epsilon():.3f} of 2 spent; "
        f"lifetime epsilon {account.lifetime_epsilon():.3f} over 2 runs (delta 1e-05, RDP)"
    )


def test_a_refusal_says_why_and_a_line_still_being_written_waits(tmp_path, data):  # noqa: F811
    merchant = _merchant(tmp_path, data)
    follower = LedgerFollower(merchant.store.directory, ledger=merchant.ledger.path)
    merchant.ledger.refusal({"run": "autumn", "round": 3}, reason="budget used up")
    merchant.ledger.refusal({"run": "winter", "round": 0}, reason="state used")
    with merchant.ledger.path.open("ab") as handle:
        handle.write(b'{"kind": "commit", "body": {')  # torn: a writer is mid-line

    assert follower.lines() == [
        "autumn round 3: refused, nothing released: budget used up",
        "winter item counts: refused, nothing released: state used",
    ]
    assert follower.lines() == []
