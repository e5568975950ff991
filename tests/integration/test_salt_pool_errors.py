"""Error handling of the concurrent salt creates in ``VaultProvider.wrap``.

The one place in this directory where a fake stands in for Vault: which create
fails, and in which order the failures arrive, cannot be forced on a real
server. The fake replaces only ``Connection.call`` (the HTTP round trip), so the
product's own ``SaltStore.create`` and pool run unchanged. Everything else about
the pool (one document per record, reuse after a partial failure, reading back)
is shown against OpenBao in ``test_vault_provider.py``.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import threading
import time
from collections.abc import Collection, Mapping
from typing import Any

import pytest

from childvault.keys import FieldKey, ProviderUnavailable, RecordKeys, VaultProvider, VaultSettings
from childvault.keys._openbao._http import Reply

pytestmark = pytest.mark.vault

ADDR = "http://127.0.0.1:1"


class FakeVault:
    """Answers salt creates after a per-record delay; some records fail."""

    def __init__(
        self,
        delays: Mapping[str, float],
        failures: Mapping[str, Exception],
        after: Mapping[str, str] | None = None,
        after_start: Mapping[str, str] | None = None,
    ) -> None:
        self.delays = delays
        self.failures = failures
        # record id -> the record id whose create must finish first
        self.after = dict(after or {})
        self.done: dict[str, threading.Event] = {}
        # record id -> the record id whose create must have started first
        self.after_start = dict(after_start or {})
        self.began: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.other: list[str] = []

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        ok: Collection[int] = (200, 204),
        **_: Any,
    ) -> Reply:
        if "/data/records/" not in path:
            with self.lock:
                self.other.append(path)
            raise AssertionError(f"no request may follow a failed salt create ({path})")
        record_id = path.rsplit("/", 1)[1]
        with self.lock:
            self.started.append(record_id)
            done = self.done.setdefault(record_id, threading.Event())
            self.began.setdefault(record_id, threading.Event()).set()
            first = self.after.get(record_id)
            before = self.done.setdefault(first, threading.Event()) if first else None
            other = self.after_start.get(record_id)
            begun = self.began.setdefault(other, threading.Event()) if other else None
        try:
            for event in (before, begun):
                if event is not None:
                    assert event.wait(timeout=10), "the creates did not run concurrently"
            time.sleep(self.delays.get(record_id, 0.2))
            if record_id in self.failures:
                raise self.failures[record_id]
            return Reply(200, {"data": {"version": 1}})
        finally:
            with self.lock:
                self.finished.append(record_id)
            done.set()


def provider(fake: FakeVault, workers: int) -> VaultProvider:
    p = VaultProvider(VaultSettings(addr=ADDR, salt_workers=workers), "v", token="hvs.fake")
    p._conn.call = fake.call  # type: ignore[method-assign]
    return p


def records(n: int) -> list[RecordKeys]:
    return [
        RecordKeys(
            f"rec-{i}-{secrets.token_hex(4)}",
            1,
            {"name": FieldKey(1, secrets.token_bytes(32))},
            new=True,
        )
        for i in range(n)
    ]


def salt_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("childvault-salts")]


def unreachable(record_id: str) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"cannot reach the Vault server at {ADDR} "
        f"(POST childvault-kv/data/records/{record_id}): is the server running?"
    )


def test_first_error_in_record_order_is_raised_after_every_worker_finished() -> None:
    recs = records(8)
    ids = [r.record_id for r in recs]
    # Record 5 fails as soon as record 2 is in flight, record 2 fails later:
    # the error of record 2 wins.
    fake = FakeVault(
        delays={ids[2]: 0.4, ids[5]: 0.0},
        after_start={ids[5]: ids[2]},
        failures={
            ids[2]: unreachable(ids[2]),
            ids[5]: ProviderUnavailable(f"the Vault server at {ADDR} is sealed (record 5)"),
        },
    )
    p = provider(fake, workers=8)
    with pytest.raises(ProviderUnavailable) as caught:
        p.wrap(recs)
    assert ids[2] in str(caught.value) and ADDR in str(caught.value)
    # Every create that started has finished (the others were dropped); no
    # worker thread is left.
    assert {ids[2], ids[5]} <= set(fake.started)
    assert sorted(fake.started) == sorted(fake.finished)
    assert salt_threads() == []
    assert fake.other == []  # no Transit call after the failure
    text = str(caught.value) + repr(caught.value) + str(caught.value.detail)
    for rec in recs:
        key = rec.fields["name"].key
        assert base64.b64encode(key).decode() not in text and "hvs.fake" not in text


def test_creates_not_yet_started_are_dropped_after_a_failure() -> None:
    recs = records(12)
    ids = [r.record_id for r in recs]
    fake = FakeVault(delays={ids[0]: 0.0}, failures={ids[0]: unreachable(ids[0])})
    p = provider(fake, workers=2)
    with pytest.raises(ProviderUnavailable, match=ids[0]):
        p.wrap(recs)
    # A server that is down is not asked once per record.
    assert len(fake.started) < len(ids)
    assert sorted(fake.started) == sorted(fake.finished)
    assert salt_threads() == []


def test_pooled_wrap_returns_blobs_in_record_order_whatever_the_finishing_order() -> None:
    recs = records(6)
    ids = [r.record_id for r in recs]
    # Each create waits for the next record's: they finish last record first.
    fake = FakeVault(
        delays=dict.fromkeys(ids, 0.0), failures={}, after=dict(itertools.pairwise(ids))
    )
    p = provider(fake, workers=6)
    wrapped: list[bytes] = []

    def encrypt(items: Any, need_policy: str) -> list[str]:
        wrapped.extend(dek for dek, _ctx in items)
        return [f"vault:v1:ct{i}" for i in range(len(items))]

    p._transit.encrypt = encrypt  # type: ignore[method-assign]
    blobs = p.wrap(recs)
    assert fake.finished == list(reversed(ids))
    assert wrapped == [r.fields["name"].key for r in recs]
    docs = [json.loads(b) for b in blobs]
    assert [d["rec"] for d in docs] == ids
    assert [d["f"]["name"][1] for d in docs] == [f"vault:v1:ct{i}" for i in range(6)]
    assert salt_threads() == []
