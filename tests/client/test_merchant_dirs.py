"""The ClientApp's partition-id -> merchant directory listing (cached per process)."""

from __future__ import annotations

from client.node import merchant_dirs


def test_lists_sorted_directories_only_and_sees_a_new_one(tmp_path):
    # Prepare
    for name in ("device-00002", "device-00000", "device-00001"):
        (tmp_path / name).mkdir()
    (tmp_path / "catalog.json").write_text("{}")

    # Execute
    first = merchant_dirs(tmp_path)
    (tmp_path / "device-00003").mkdir()
    second = merchant_dirs(tmp_path)

    # Assert
    assert first == ("device-00000", "device-00001", "device-00002")
    assert second == (*first, "device-00003")


def test_a_missing_folder_has_no_merchants(tmp_path):
    assert merchant_dirs(tmp_path / "absent") == ()
