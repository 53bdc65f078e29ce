"""Hypothesis state machine: commits, branches, tags, resets, checkouts and gc vs a model.

Invariants after every step: every version the model can still reach (branch tips, their
history, tags) reads back exactly; tags never move; gc never deletes anything reachable; verify
stays clean.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

import chunkref
from chunkref.errors import ConflictError, InvalidArgumentError
from chunkref.repo import Repository

SHAPE = (8, 6)
CHUNKS = (4, 3)
NAMES = st.sampled_from(["a", "b", "c", "d"])


class RepoMachine(RuleBasedStateMachine):
    tags = Bundle("tags")

    @initialize()
    def setup(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="repo-sm-")
        self.repo = Repository.create(self.dir + "/r", page_chunks=2, inline_threshold=24)
        s = self.repo.writable_session()
        a = chunkref.open_group(s.store, mode="a").create_array("x", shape=SHAPE, chunks=CHUNKS, dtype="i2",
                                                                fill_value=0)
        a[...] = 0
        c = s.commit("init")
        self.values: dict[str, np.ndarray] = {c: np.zeros(SHAPE, "i2")}
        self.parent: dict[str, str | None] = {c: None}
        self.branches = {"main": c}
        self.tag_map: dict[str, str] = {}
        self.dead_tags: set[str] = set()
        self.reachable_objects: set[str] = set()

    def teardown(self) -> None:
        shutil.rmtree(getattr(self, "dir", "/nonexistent"), ignore_errors=True)

    # -- rules ---------------------------------------------------------------------------------

    @rule(branch=NAMES, r0=st.integers(0, 7), c0=st.integers(0, 5), h=st.integers(1, 8), w=st.integers(1, 6),
          v=st.integers(-100, 100))
    def write_commit(self, branch: str, r0: int, c0: int, h: int, w: int, v: int) -> None:
        if branch not in self.branches:
            return
        s = self.repo.writable_session(branch)
        a = chunkref.open_array(s.store, path="x", mode="r+")
        a[r0 : r0 + h, c0 : c0 + w] = v
        before = self.values[self.branches[branch]]
        after = before.copy()
        after[r0 : r0 + h, c0 : c0 + w] = v
        try:
            c = s.commit(f"write {v}")
        except InvalidArgumentError:
            return
        self.values[c] = after
        self.parent[c] = self.branches[branch]
        self.branches[branch] = c

    @rule(name=NAMES, source=NAMES)
    def create_branch(self, name: str, source: str) -> None:
        if source not in self.branches:
            return
        if name in self.branches:
            try:
                self.repo.create_branch(name, source)
            except InvalidArgumentError:
                return
            raise AssertionError("creating an existing branch must fail")
        self.repo.create_branch(name, source)
        self.branches[name] = self.branches[source]

    @rule(name=NAMES)
    def delete_branch(self, name: str) -> None:
        if name == "main" or name not in self.branches:
            return
        self.repo.delete_branch(name)
        del self.branches[name]

    @rule(name=NAMES, to=NAMES, stale=st.booleans())
    def reset_branch(self, name: str, to: str, stale: bool) -> None:
        if name not in self.branches or to not in self.branches:
            return
        expected = self.branches[name]
        if stale:
            expected = next(iter(self.values))  # the first commit: usually not the tip
            if expected == self.branches[name]:
                return
            try:
                self.repo.reset_branch(name, to, expected=expected)
            except ConflictError:
                return
            raise AssertionError("a reset with a stale expected commit must fail")
        self.repo.reset_branch(name, to, expected=expected)
        self.branches[name] = self.branches[to]

    @rule(target=tags, name=st.text("tuvw", min_size=1, max_size=3), at=NAMES)
    def create_tag(self, name: str, at: str) -> str:
        if at not in self.branches or name in self.tag_map or name in self.dead_tags:
            if name in self.tag_map or name in self.dead_tags:
                try:
                    self.repo.create_tag(name, self.branches.get(at, "main") if at in self.branches else "main")
                except InvalidArgumentError:
                    return name
                raise AssertionError("a used or deleted tag name must be refused")
            return name
        self.repo.create_tag(name, at)
        self.tag_map[name] = self.branches[at]
        return name

    @rule(name=consumes(tags))
    def delete_tag(self, name: str) -> None:
        if name in self.tag_map:
            self.repo.delete_tag(name)
            self.dead_tags.add(name)
            del self.tag_map[name]

    @rule()
    def gc(self) -> None:
        self.repo.gc(timedelta(0))
        # Nothing reachable was deleted: every reachable version reads back, verify is clean.
        for c in self._reachable():
            s = self.repo.readonly_session(commit=c)
            np.testing.assert_array_equal(chunkref.open_array(s.store, path="x", mode="r")[...], self.values[c])
        assert self.repo.verify().ok

    @precondition(lambda self: len(self.values) > 1)
    @rule(data=st.data())
    def checkout_any_reachable(self, data: st.DataObject) -> None:
        reachable = sorted(self._reachable())
        c = data.draw(st.sampled_from(reachable))
        s = self.repo.readonly_session(commit=c)
        got = chunkref.open_array(s.store, path="x", mode="r")[...]
        np.testing.assert_array_equal(got, self.values[c])

    @precondition(lambda self: len(self.values) > 1)
    @rule(data=st.data())
    def diff_matches_model(self, data: st.DataObject) -> None:
        reachable = sorted(self._reachable())
        a = data.draw(st.sampled_from(reachable))
        b = data.draw(st.sampled_from(reachable))
        va, vb = self.values[a], self.values[b]
        # Chunks whose values differ (equal values encode to equal bytes: equal CIDs).
        blocks = (va != vb).reshape(SHAPE[0] // CHUNKS[0], CHUNKS[0], SHAPE[1] // CHUNKS[1], CHUNKS[1])
        want = np.argwhere(blocks.any(axis=(1, 3))).tolist()
        got = self.repo.diff(a, b).chunks.get("x")
        assert (got.tolist() if got is not None else []) == want

    # -- invariants ----------------------------------------------------------------------------

    def _reachable(self) -> set[str]:
        out: set[str] = set()
        for c in list(self.branches.values()) + list(self.tag_map.values()):
            cur: str | None = c
            while cur is not None and cur not in out:
                out.add(cur)
                cur = self.parent[cur]
        return out

    @invariant()
    def refs_match_model(self) -> None:
        if not hasattr(self, "repo"):
            return
        assert self.repo.list_branches() == self.branches
        assert self.repo.list_tags() == self.tag_map  # tags never move

    @invariant()
    def tips_read_back(self) -> None:
        if not hasattr(self, "repo"):
            return
        for name, c in self.branches.items():
            s = self.repo.readonly_session(branch=name)
            assert s.base_commit == c
            np.testing.assert_array_equal(chunkref.open_array(s.store, path="x", mode="r")[...], self.values[c])
            assert [x.cid for x in self.repo.log(name)][: 1] == [c]


TestRepoMachine = RepoMachine.TestCase
TestRepoMachine.settings = settings(
    max_examples=25, stateful_step_count=15, deadline=None, suppress_health_check=list(HealthCheck)
)


def test_model_history_survives_gc_and_verifies() -> None:
    """A deterministic walk through the same operations, ending with a full check."""
    m = RepoMachine()
    m.setup()
    try:
        m.write_commit("main", 0, 0, 4, 3, 5)
        m.create_branch("b", "main")
        m.write_commit("b", 4, 3, 4, 3, 7)
        m.create_tag("t", "b")
        m.reset_branch("main", "b", False)
        m.write_commit("main", 0, 0, 8, 6, 1)
        m.delete_branch("b")
        m.gc()
        for c in m._reachable():
            s = m.repo.readonly_session(commit=c)
            np.testing.assert_array_equal(chunkref.open_array(s.store, path="x", mode="r")[...], m.values[c])
        assert m.repo.verify().ok
        m.refs_match_model()
    finally:
        m.teardown()
