"""Stateful model test: random sequences of store operations against a dict model."""

from __future__ import annotations

import shutil
import tempfile
import uuid

import fsspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chunkref.errors import ShortReadError
from chunkref.storage import (
    FsspecStore,
    LocalStore,
    MemoryStore,
    OffsetRequest,
    RangeRequest,
    Store,
    SuffixRequest,
)

# Few names, so operations collide (overwrite, delete, nested prefixes).
segments = st.sampled_from(["a", "b", "c", "zarr.json", "0"])
keys = st.lists(segments, min_size=1, max_size=3).map("/".join)
values = st.binary(max_size=40)


def _make(kind: str) -> tuple[Store, object]:
    if kind == "local":
        d = tempfile.mkdtemp(prefix="chunkref-stateful-")
        return LocalStore(d), d
    if kind == "fsspec-memory":
        root = f"memory://stateful-{uuid.uuid4().hex}"
        return FsspecStore(root), root
    return MemoryStore(), None


def _cleanup(kind: str, handle: object) -> None:
    if kind == "local":
        shutil.rmtree(str(handle), ignore_errors=True)
    elif kind == "fsspec-memory":
        fs = fsspec.filesystem("memory")
        if fs.exists(str(handle)):
            fs.rm(str(handle), recursive=True)


def _machine(kind: str) -> type[RuleBasedStateMachine]:
    class StoreModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store, self.handle = _make(kind)
            self.model: dict[str, bytes] = {}

        def teardown(self) -> None:
            _cleanup(kind, self.handle)

        def _conflicts(self, key: str) -> bool:
            # A file system cannot hold both "a" and "a/b": such writes are not part of the model.
            return any(k.startswith(key + "/") or key.startswith(k + "/") for k in self.model)

        @rule(key=keys, value=values)
        def set(self, key: str, value: bytes) -> None:
            if self._conflicts(key):
                return
            self.store.set(key, value)
            self.model[key] = value

        @rule(key=keys, value=values)
        def set_if_not_exists(self, key: str, value: bytes) -> None:
            if self._conflicts(key):
                return
            written = self.store.set_if_not_exists(key, value)
            assert written == (key not in self.model)
            self.model.setdefault(key, value)

        @rule(key=keys)
        def delete(self, key: str) -> None:
            self.store.delete(key)
            self.model.pop(key, None)

        @precondition(lambda self: bool(self.model))
        @rule(data=st.data())
        def get_range(self, data) -> None:
            key = data.draw(st.sampled_from(sorted(self.model)))
            v = self.model[key]
            start = data.draw(st.integers(0, len(v) + 2))
            stop = data.draw(st.integers(start, len(v) + 3))
            kind_ = data.draw(st.sampled_from(["range", "offset", "suffix"]))
            if kind_ == "range":
                if stop > len(v):
                    with pytest.raises(ShortReadError):
                        self.store.get(key, RangeRequest(start, stop))
                else:
                    assert self.store.get(key, RangeRequest(start, stop)) == v[start:stop]
            elif kind_ == "offset":
                if start > len(v):
                    with pytest.raises(ShortReadError):
                        self.store.get(key, OffsetRequest(start))
                else:
                    assert self.store.get(key, OffsetRequest(start)) == v[start:]
            else:
                assert self.store.get(key, SuffixRequest(start)) == v[max(0, len(v) - start) :]

        @rule(prefix=st.sampled_from(["", "a", "a/", "b/", "a/b", "zarr.json"]))
        def delete_prefix(self, prefix: str) -> None:
            if not prefix:
                return
            self.store.delete_prefix(prefix)
            p = prefix if prefix.endswith("/") else prefix + "/"
            for k in [k for k in self.model if k.startswith(p)]:
                del self.model[k]

        @invariant()
        def contents_match(self) -> None:
            assert sorted(self.store.list()) == sorted(self.model)
            ks = sorted(self.model)
            assert self.store.get_many([(k, None) for k in ks]) == [self.model[k] for k in ks]

        @invariant()
        def list_dir_matches(self) -> None:
            for prefix in ("", "a", "b/c"):
                p = prefix + "/" if prefix else ""
                expected = sorted({k[len(p) :].split("/", 1)[0] for k in self.model if k.startswith(p)})
                assert self.store.list_dir(prefix) == expected

    StoreModel.__name__ = f"StoreModel_{kind.replace('-', '_')}"
    return StoreModel


_SETTINGS = settings(max_examples=25, stateful_step_count=20, deadline=None)

TestMemoryStoreModel = _machine("memory").TestCase
TestMemoryStoreModel.settings = _SETTINGS
TestLocalStoreModel = _machine("local").TestCase
TestLocalStoreModel.settings = _SETTINGS
TestFsspecMemoryStoreModel = _machine("fsspec-memory").TestCase
TestFsspecMemoryStoreModel.settings = _SETTINGS
