import numpy as np

from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data, concat_user_item_data
from tests.conftest import make_events


def test_leave_last_out_split_dedupes_and_holds_out_latest(tiny_data):
    # catalog a=0 b=1 c=2 d=3; users u1=0 u2=1 u3=2
    assert tiny_data.user_keys == ("u1", "u2", "u3")
    assert tiny_data.num_items == 4
    assert tiny_data.items_of(0).tolist() == [0, 1]  # a, b (c held out)
    assert tiny_data.items_of(1).tolist() == [0]  # a (b@9 held out, b@5 collapsed into it)
    assert tiny_data.items_of(2).tolist() == [3]  # single item: train only
    assert tiny_data.test_users.tolist() == [0, 1]
    assert tiny_data.test_items.tolist() == [2, 1]


def test_test_item_never_among_training_items(tiny_data):
    for user, item in zip(tiny_data.test_users, tiny_data.test_items, strict=True):
        assert item not in tiny_data.items_of(int(user))


def test_unknown_items_are_counted_and_skipped():
    events = make_events([("u", "a", 1), ("u", "zzz", 2), ("u", "b", 3)])
    data = build_user_item_data(events, ItemCatalog(keys=("a", "b")))
    assert data.unknown_items == 1
    assert data.items_of(0).tolist() == [0] and data.test_items.tolist() == [1]


def test_save_load_round_trip(tmp_path, tiny_data):
    tiny_data.save(tmp_path, data_file="d.npz", users_file="u.json")
    back = type(tiny_data).load(tmp_path, data_file="d.npz", users_file="u.json")
    assert back.user_keys == tiny_data.user_keys
    np.testing.assert_array_equal(back.train_items, tiny_data.train_items)
    np.testing.assert_array_equal(back.test_items, tiny_data.test_items)


def test_concat_offsets_users(tiny_data):
    pooled, offsets = concat_user_item_data([tiny_data, tiny_data])
    assert offsets.tolist() == [0, 3, 6]
    assert pooled.num_users == 6
    assert pooled.items_of(3).tolist() == tiny_data.items_of(0).tolist()
    assert pooled.test_users.tolist() == [0, 1, 3, 4]


def test_catalog_encode_and_save(tmp_path):
    catalog = ItemCatalog.from_keys(np.array(["b", "a", "b"], dtype=object))
    assert catalog.keys == ("a", "b")
    encoded = catalog.encode(np.array(["b", "x", "a"], dtype=object))
    assert encoded.indices.tolist() == [1, -1, 0]
    assert encoded.unknown_count == 1 and encoded.unknown_examples == ("x",)
    catalog.save(tmp_path / "c.json")
    assert ItemCatalog.load(tmp_path / "c.json") == catalog


def test_train_csr_matches_items_of(tiny_data):
    users = np.array([2, 0, 1])
    indptr, indices = tiny_data.train_csr(users)
    assert indptr.tolist() == [0, 1, 3, 4]
    assert indices.tolist() == [3, 0, 1, 0]  # u3: d ; u1: a b ; u2: a


def _typed_data():
    # u1: a view, b cart, a purchase (the latest event of a pair wins), c view -> test c
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "a", 3), ("u1", "c", 4), ("u2", "b", 1)]
    kinds = ["view", "cart", "purchase", "view", "purchase"]
    catalog = ItemCatalog.from_keys(["a", "b", "c"])
    return build_user_item_data(make_events(rows, event_types=kinds), catalog)


def test_event_types_travel_with_each_pair_and_survive_save_load(tmp_path):
    from common.data.dataset import UserItemData
    from common.data.schema import EVENT_TYPES
    from simulations.reference import validation_split

    data = _typed_data()
    codes = {name: i for i, name in enumerate(EVENT_TYPES)}
    # u1 trains on b (cart) then a (purchase, its latest event), holds out c (view)
    assert data.items_of(0).tolist() == [1, 0]
    assert data.train_events.tolist()[:2] == [codes["cart"], codes["purchase"]]
    assert data.test_events.tolist() == [codes["view"]]
    data.save(tmp_path, data_file="d.npz", users_file="u.json")
    loaded = UserItemData.load(tmp_path, data_file="d.npz", users_file="u.json")
    np.testing.assert_array_equal(loaded.train_events, data.train_events)
    np.testing.assert_array_equal(loaded.test_events, data.test_events)
    pooled, _ = concat_user_item_data([data, data])
    assert pooled.train_events.tolist() == data.train_events.tolist() * 2
    split = validation_split(data)
    assert split.test_events.tolist() == [codes["purchase"]]  # u1's last training pair
    untyped = build_user_item_data(
        make_events([("u", "a", 1), ("u", "b", 2)]), ItemCatalog.from_keys(["a", "b", "c"])
    )
    assert untyped.train_events is None and untyped.test_events is None
    untyped.save(tmp_path, data_file="x.npz", users_file="x.json")
    assert UserItemData.load(tmp_path, data_file="x.npz", users_file="x.json").train_events is None
    assert concat_user_item_data([data, untyped])[0].train_events is None


def test_histories_put_the_held_out_item_last_with_its_event_type():
    from common.data.schema import EVENT_TYPES

    indptr, items, events = _typed_data().histories()
    codes = {name: i for i, name in enumerate(EVENT_TYPES)}
    assert indptr.tolist() == [0, 3, 4]
    assert items.tolist() == [1, 0, 2, 1]  # u1: b, a, then held-out c; u2: b only
    assert events.tolist() == [codes[k] for k in ("cart", "purchase", "view", "purchase")]
