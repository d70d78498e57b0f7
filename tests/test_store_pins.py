"""Pins: which key owns an uploaded file."""
from __future__ import annotations

from proxy.store import lookup, migrate, open_db, pin, pool_view


def test_pin_and_lookup(tmp_path):
    db = open_db(tmp_path / "keys.db")
    migrate(db)
    assert lookup(db, "files/abc") is None
    pin(db, "files/abc", 1)
    assert lookup(db, "files/abc") == 1
    seq = pool_view(db)["pins"][-1]["seq"]
    pin(db, "files/abc", 1)  # same key: nothing new for the pools
    assert pool_view(db, pins_after_seq=seq)["pins"] == []
    pin(db, "files/abc", 2)  # moved: a new seq so incremental readers see it
    moved = pool_view(db, pins_after_seq=seq)["pins"]
    assert [(p["name"], p["key_id"]) for p in moved] == [("files/abc", 2)]
    assert moved[0]["seq"] > seq
    assert lookup(db, "files/abc") == 2
    assert db["pins"].count == 1
