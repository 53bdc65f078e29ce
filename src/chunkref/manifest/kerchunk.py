"""kerchunk JSON references: read version 0 / 1 into a :class:`Manifest`, write version 1.

Reading
-------
* Version 0: a flat object ``{key: value}``.  Version 1: ``{"version": 1, "templates": {...},
  "refs": {...}, "gen": [...]}``.
* Values: a string is inline data (``base64:`` prefix: base64-decoded; otherwise its UTF-8 bytes),
  or, for a metadata key (``.zarray``, ``.zattrs``, ``.zgroup``, ``zarr.json``), a JSON document;
  a JSON object is ``json.dumps``-ed (fsspec semantics); ``[url]`` is a whole-file reference;
  ``[url, offset, length]`` a byte range.
* Templates are substituted literally (:mod:`chunkref.manifest.templates`); ``gen`` entries are
  expanded at load time with a safe integer-expression evaluator, vectorised over the generator's
  dimensions; no template engine ever runs.
* Chunk keys are grouped by array and parsed with numpy (one join/split per array, not one
  object per key); a malformed or out-of-grid key raises :class:`~chunkref.errors.ManifestError`
  naming it.
* Untrusted input is bounded: ``manifest.max_json_bytes`` (checked before parsing),
  ``manifest.max_json_depth`` (metadata documents), ``manifest.max_refs`` (references incl.
  ``gen`` expansion) and ``manifest.max_table_chunks`` (grid size of one array).

Writing
-------
Always version 1 with Zarr v2 metadata: v3 documents are converted
(:func:`v3_to_v2_documents`); what v2 cannot express (rectilinear grids, sharding, storage
transformers, unknown codecs) raises :class:`~chunkref.errors.ManifestError` naming the array and
field.  Source URLs used by more than one reference become ``templates`` (``{{u0}}``...);
inline bytes are written as text when ASCII-safe (as kerchunk does), else ``base64:``.
Content ids, source sizes/mtimes/ETags and ``refused`` have no place in this format and are not
written.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import ujson

from chunkref.config import config
from chunkref.errors import InvalidKeyError, ManifestError, MetadataError, SourceUnavailableError
from chunkref.manifest.manifest import (
    V2_ARRAY_DOC,
    V2_ATTRS_DOC,
    V2_GROUP_DOC,
    V3_DOC,
    Manifest,
    expected_grid_shape,
    node_kind,
)
from chunkref.manifest.sources import resolve_url
from chunkref.manifest.table import INLINE, MAX_BYTE_POSITION, WHOLE, ChunkTable
from chunkref.manifest.templates import compile_template, substitute
from chunkref.storage.base import validate_key
from chunkref.zarr.keys import ChunkKeyEncoding, parse_chunk_key_encoding

__all__ = [
    "from_kerchunk",
    "read_kerchunk",
    "to_kerchunk",
    "to_kerchunk_json",
    "v3_to_v2_documents",
    "write_kerchunk",
]

_METADATA_NAMES = frozenset({V2_ARRAY_DOC, V2_ATTRS_DOC, V2_GROUP_DOC, V3_DOC})
# Consolidated metadata is derived data: rebuilt by whoever needs it, never trusted as input.
_IGNORED_NAMES = frozenset({".zmetadata"})


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def _read_bytes(url: str, storage_options: Mapping[str, Any]) -> bytes:
    import fsspec

    limit = int(config.get("manifest.max_json_bytes"))
    try:
        with fsspec.open(url, "rb", compression="infer", **storage_options) as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SourceUnavailableError(f"cannot read manifest {url!r}: {exc}") from exc
    if len(data) > limit:
        raise ManifestError(
            f"manifest {url!r} is larger than manifest.max_json_bytes={limit} bytes; raise the limit to load it"
        )
    return data


def parse_json(data: bytes | str, where: str) -> Any:
    """Parse untrusted JSON text with the size limit (depth is bounded by the parser)."""
    limit = int(config.get("manifest.max_json_bytes"))
    if len(data) > limit:
        raise ManifestError(f"{where}: JSON larger than manifest.max_json_bytes={limit} bytes")
    try:
        return ujson.loads(data)
    except (ValueError, RecursionError, OverflowError) as exc:
        raise ManifestError(f"{where}: invalid JSON: {exc}") from exc


def _check_depth(obj: Any, where: str, limit: int) -> None:
    # Iterative, so a hostile document cannot exhaust the Python stack either.
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                raise ManifestError(f"{where}: JSON nested deeper than manifest.max_json_depth={limit}")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > limit:
                raise ManifestError(f"{where}: JSON nested deeper than manifest.max_json_depth={limit}")
            stack.extend((v, depth + 1) for v in item)


def _metadata_document(key: str, value: Any, depth_limit: int) -> dict:
    if isinstance(value, str):
        text: str | bytes = value
        if value.startswith("base64:"):
            text = _b64(key, value[7:])
        try:
            # Metadata in the wild holds bare NaN / Infinity: the stdlib parser accepts them.
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"manifest key {key!r}: invalid JSON metadata: {exc}") from exc
    elif isinstance(value, dict):
        doc = value
    else:
        raise ManifestError(f"manifest key {key!r}: metadata must be a JSON string or object, got {value!r:.80}")
    if not isinstance(doc, dict):
        raise ManifestError(f"manifest key {key!r}: metadata must be a JSON object, got {type(doc).__name__}")
    _check_depth(doc, f"manifest key {key!r}", depth_limit)
    return doc


def _b64(key: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ManifestError(f"manifest key {key!r}: invalid base64 inline data: {exc}") from exc


def _check_int(key: str, value: Any, what: str) -> int:
    # bool is an int subclass: [url, true, 5] is not a reference.
    if type(value) is not int:
        raise ManifestError(f"manifest key {key!r}: {what} must be an integer, got {value!r:.40}")
    if value < 0 or value > MAX_BYTE_POSITION:
        raise ManifestError(f"manifest key {key!r}: {what} {value} out of range [0, 2**63)")
    return value


class _Entries:
    """Chunk entries collected from ``refs`` and ``gen``, as parallel lists."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.urls: list[str | None] = []  # None for inline entries
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.data: dict[int, bytes] = {}  # entry index -> inline bytes

    def add_ref(self, key: str, url: str, offset: int, length: int) -> None:
        self.keys.append(key)
        self.urls.append(url)
        self.offsets.append(offset)
        self.lengths.append(length)

    def offsets_array(self) -> np.ndarray:
        if getattr(self, "_offs", None) is None or len(self._offs) != len(self.offsets):
            self._offs = np.array(self.offsets, dtype=np.uint64)
        return self._offs

    def lengths_array(self) -> np.ndarray:
        if getattr(self, "_lens", None) is None or len(self._lens) != len(self.lengths):
            self._lens = np.array(self.lengths, dtype=np.uint64)
        return self._lens

    def add_inline(self, key: str, data: bytes) -> None:
        self.data[len(self.keys)] = data
        self.keys.append(key)
        self.urls.append(None)
        self.offsets.append(0)
        self.lengths.append(len(data))


def _expand_gen(gens: Any, templates: Mapping[str, str], entries: _Entries, budget: int) -> int:
    """Expand kerchunk ``gen`` entries into ``entries``; return how many were generated."""
    if not isinstance(gens, list):
        raise ManifestError(f"manifest field 'gen' must be a list, got {type(gens).__name__}")
    total = 0
    for g, gen in enumerate(gens):
        where = f"manifest gen[{g}]"
        if not isinstance(gen, dict):
            raise ManifestError(f"{where} must be an object")
        unknown = set(gen) - {"key", "url", "offset", "length", "dimensions"}
        if unknown:
            raise ManifestError(f"{where} has unknown fields {sorted(unknown)}")
        if "key" not in gen or "url" not in gen or "dimensions" not in gen:
            raise ManifestError(f"{where} needs 'key', 'url' and 'dimensions'")
        if ("offset" in gen) != ("length" in gen):
            raise ManifestError(f"{where}: 'offset' and 'length' must be given together")
        dims_spec = gen["dimensions"]
        if not isinstance(dims_spec, dict) or not dims_spec:
            raise ManifestError(f"{where}: 'dimensions' must be a non-empty object")
        axes: list[np.ndarray] = []
        for name, spec in dims_spec.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in templates:
                raise ManifestError(f"{where}: bad dimension name {name!r}")
            if isinstance(spec, list):
                if not all(type(v) is int for v in spec):
                    raise ManifestError(f"{where}: dimension {name!r} list must hold integers")
                axes.append(np.asarray(spec, dtype=np.int64))
            elif isinstance(spec, dict):
                if set(spec) - {"start", "stop", "step"} or "stop" not in spec:
                    raise ManifestError(f"{where}: dimension {name!r} needs 'stop' (and optional start, step)")
                start, stop, step = spec.get("start", 0), spec["stop"], spec.get("step", 1)
                if not all(type(v) is int and abs(v) < 2**62 for v in (start, stop, step)) or step == 0:
                    raise ManifestError(f"{where}: dimension {name!r} start/stop/step must be integers, step != 0")
                count = len(range(start, stop, step))
                if count > budget:
                    raise ManifestError(f"{where}: dimension {name!r} has {count} values, over manifest.max_refs")
                axes.append(np.arange(start, stop, step, dtype=np.int64))
            else:
                raise ManifestError(f"{where}: dimension {name!r} must be a list or a range object")
        n = math.prod(len(a) for a in axes)
        if total + n > budget:
            raise ManifestError(f"{where} expands to {n} references, over manifest.max_refs")
        total += n
        if n == 0:
            continue
        # Cartesian product in itertools.product order (the last dimension varies fastest).
        grids = np.meshgrid(*axes, indexing="ij")
        dims = {name: grid.reshape(-1) for name, grid in zip(dims_spec, grids)}
        names, dnames = set(templates), set(dims)
        key_t = compile_template(gen["key"], names, dnames, f"{where} key", allow_expressions=True)
        url_t = compile_template(gen["url"], names, dnames, f"{where} url", allow_expressions=True)
        keys = key_t.render(dims, templates, n).tolist()
        urls = url_t.render(dims, templates, n).tolist()
        if "offset" in gen:
            ints = []
            for field in ("offset", "length"):
                spec = gen[field]
                if type(spec) is int:
                    vals = np.full(n, spec, dtype=np.int64)
                else:
                    t = compile_template(spec, names, dnames, f"{where} {field}", allow_expressions=True)
                    vals = t.render_int(dims, templates, n)
                if vals.min() < 0 or vals.max() > MAX_BYTE_POSITION:
                    raise ManifestError(f"{where}: {field} out of range [0, 2**63)")
                ints.append(vals)
            if (ints[0].astype(np.float64) + ints[1] > MAX_BYTE_POSITION).any():
                raise ManifestError(f"{where}: offset + length out of range")
            offsets, lengths = ints[0].tolist(), ints[1].tolist()
        else:
            offsets, lengths = [0] * n, [int(WHOLE)] * n
        _check_keys(keys)
        entries.keys.extend(keys)
        entries.urls.extend(urls)
        entries.offsets.extend(offsets)
        entries.lengths.extend(lengths)
    return total


_BAD_KEY_PATTERN = re.compile(r"(?:^|\x00)(?:/|\.{1,2}(?:/|\x00|$)|.:)|//|/\.{1,2}(?:/|\x00|$)|/(?:\x00|$)|\\|(?:^|\x00)(?:\x00|$)")


def _check_keys(keys: list[str]) -> None:
    """Validate many keys at once (one join and one regex scan); name the first bad one."""
    if not keys:
        return
    joined = "\x00".join(keys)
    # A NUL inside a key shows up as an extra separator; the pattern catches absolute keys,
    # drive letters, empty, '.' and '..' segments and backslashes at key boundaries.
    if joined.count("\x00") != len(keys) - 1 or _BAD_KEY_PATTERN.search(joined):
        for k in keys:
            _check_key(k)


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise ManifestError(f"manifest key {key!r} is not a string")
    try:
        return validate_key(key)
    except InvalidKeyError as exc:
        raise ManifestError(f"manifest key {key!r} is not allowed: {exc}") from exc


def from_kerchunk(
    refs: Mapping[str, Any], *, location: str | None = None, target: str | None = None
) -> Manifest:
    """Build a :class:`Manifest` from parsed kerchunk references (version 0 or 1).

    Parameters
    ----------
    refs
        The parsed JSON object.
    location
        Where the references were read from (relative URLs resolve against it).
    target
        URL used for references whose URL is ``null`` (fsspec's ``target=``).

    Raises
    ------
    ManifestError
        Malformed or hostile content, naming the key or field.
    """
    if not isinstance(refs, Mapping):
        raise ManifestError(f"kerchunk references must be a JSON object, got {type(refs).__name__}")
    max_refs = int(config.get("manifest.max_refs"))
    depth_limit = int(config.get("manifest.max_json_depth"))
    templates: dict[str, str] = {}
    gens: Any = []
    if "version" in refs:
        if refs["version"] != 1 or type(refs["version"]) is not int:
            raise ManifestError(f"unsupported kerchunk references version {refs['version']!r} (known: 0, 1)")
        unknown = set(refs) - {"version", "templates", "refs", "gen"}
        if unknown:
            raise ManifestError(f"kerchunk version 1 references have unknown fields {sorted(unknown)}")
        raw_templates = refs.get("templates") or {}
        if not isinstance(raw_templates, dict):
            raise ManifestError("manifest field 'templates' must be an object")
        for name, value in raw_templates.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ManifestError(f"manifest template name {name!r} is not a plain identifier")
            if not isinstance(value, str):
                raise ManifestError(f"manifest template {name!r} must be a string, got {type(value).__name__}")
            # Template values are literal: a value holding template syntax would be jinja-rendered
            # by fsspec; we refuse it rather than guess.
            if "{{" in value or "{%" in value:
                raise ManifestError(f"manifest template {name!r} contains template syntax: {value!r}")
            templates[name] = value
        body = refs.get("refs", {})
        if not isinstance(body, Mapping):
            raise ManifestError("manifest field 'refs' must be an object")
        gens = refs.get("gen") or []
    else:
        body = refs
    if len(body) > max_refs:
        raise ManifestError(f"manifest has {len(body)} references, over manifest.max_refs={max_refs}")

    meta: dict[str, dict[str, dict]] = {}
    entries = _Entries()
    # Hot loop over up to millions of references: locals, no per-key helper calls; keys are
    # validated in bulk afterwards and template substitution is memoised per distinct URL.
    keys_append, urls_append = entries.keys.append, entries.urls.append
    offs_append, lens_append = entries.offsets.append, entries.lengths.append
    substituted: dict[str, str] = {}
    whole = int(WHOLE)
    for key, value in body.items():
        if type(key) is not str:
            raise ManifestError(f"manifest key {key!r} is not a string")
        name = key[key.rfind("/") + 1 :]
        if name in _METADATA_NAMES:
            _check_key(key)
            meta.setdefault(key[: max(key.rfind("/"), 0)], {})[name] = _metadata_document(key, value, depth_limit)
            continue
        if name in _IGNORED_NAMES:
            continue
        if type(value) is list and len(value) == 3:
            url, offset, length = value
            if type(offset) is not int or type(length) is not int or not (
                0 <= offset <= MAX_BYTE_POSITION and 0 <= length <= MAX_BYTE_POSITION - offset
            ):
                _check_int(key, offset, "offset")
                _check_int(key, length, "length")
                raise ManifestError(f"manifest key {key!r}: offset + length out of range")
        elif type(value) is list and len(value) == 1:
            url, offset, length = value[0], 0, whole
        elif isinstance(value, str):
            entries.add_inline(key, _b64(key, value[7:]) if value.startswith("base64:") else value.encode("utf-8"))
            continue
        elif isinstance(value, list):
            raise ManifestError(f"manifest key {key!r}: reference must be [url] or [url, offset, length]")
        elif isinstance(value, dict):
            entries.add_inline(key, json.dumps(value).encode("utf-8"))
            continue
        else:
            raise ManifestError(f"manifest key {key!r}: unsupported value {value!r:.80}")
        if type(url) is not str or not url:
            if url is None and target is not None:
                url = target
            elif url is None:
                raise ManifestError(f"manifest key {key!r}: reference has no URL and no target was given")
            else:
                raise ManifestError(f"manifest key {key!r}: reference URL must be a non-empty string, got {url!r:.80}")
        if "{" in url:
            done = substituted.get(url)
            if done is None:
                done = substituted[url] = substitute(url, templates, f"manifest key {key!r}")
            url = done
        keys_append(key)
        urls_append(url)
        offs_append(offset)
        lens_append(length)
    _check_keys(entries.keys)
    if gens:
        _expand_gen(gens, templates, entries, max_refs - len(body))

    return _assemble(meta, entries, location)


def _assemble(meta: dict[str, dict[str, dict]], entries: _Entries, location: str | None) -> Manifest:
    m = Manifest(location=location)
    array_paths: dict[str, dict[str, dict]] = {}
    for path in sorted(meta, key=lambda p: (p.count("/"), p)):
        docs = meta[path]
        if V2_ARRAY_DOC in docs or (V3_DOC in docs and docs[V3_DOC].get("node_type") == "array"):
            array_paths[path] = docs
    # Groups first (parents before children), so arrays find their ancestors.
    for path in sorted(meta, key=lambda p: (p.count("/"), p)):
        if path in array_paths:
            continue
        docs = meta[path]
        if V3_DOC in docs:
            m.nodes[path] = {V3_DOC: docs[V3_DOC]}
            node_kind(m.nodes[path], path)
        else:
            m.add_group(path, docs.get(V2_ATTRS_DOC), zarr_format=2)
    # Assign every chunk entry to its array: the key's parent for '.'-separated keys, an
    # ancestor for '/'-separated ones.
    members: dict[str, list[int]] = {p: [] for p in array_paths}
    for i, key in enumerate(entries.keys):
        head = key.rpartition("/")[0]
        while head not in members:
            if not head:
                raise ManifestError(f"manifest key {key!r} is neither metadata nor a chunk of a known array")
            head = head.rpartition("/")[0]
        members[head].append(i)
    max_chunks = int(config.get("manifest.max_table_chunks"))
    for path, docs in array_paths.items():
        grid = expected_grid_shape(docs, path)
        nchunks = math.prod(grid)
        if nchunks > max_chunks:
            raise ManifestError(
                f"array {path!r} has {nchunks} chunks, over manifest.max_table_chunks={max_chunks}"
            )
        encoding = _array_key_encoding(docs, path)
        table = _build_table(m, path, grid, encoding, members[path], entries)
        m.add_array(path, {k: v for k, v in docs.items() if k != V2_GROUP_DOC}, table)
    if "" not in m.nodes:
        m.add_group("", zarr_format=2 if not any(V3_DOC in d for d in meta.values()) else 3)
    return m


def _array_key_encoding(docs: Mapping[str, dict], path: str) -> ChunkKeyEncoding:
    try:
        if V3_DOC in docs:
            return parse_chunk_key_encoding(docs[V3_DOC].get("chunk_key_encoding", "default"))
        return ChunkKeyEncoding.from_dimension_separator(docs[V2_ARRAY_DOC].get("dimension_separator"))
    except MetadataError as exc:
        raise ManifestError(f"array {path!r}: {exc}") from exc


_LEADING_ZERO = {sep: re.compile(r"(?:^|" + re.escape(sep) + r")0[0-9]") for sep in ("/", ".")}
_TOO_LONG = re.compile(r"[0-9]{19}")


def parse_chunk_keys(suffixes: list[str], encoding: ChunkKeyEncoding, ndim: int, where: str) -> np.ndarray:
    """Grid coords ``(n, ndim)`` of chunk keys relative to their array, parsed in bulk.

    One join and one split per array, then numpy's string-to-int conversion; a key that fails
    the bulk checks is re-parsed strictly on its own to name it in the error.
    """
    n = len(suffixes)
    if n == 0:
        return np.zeros((0, ndim), np.int64)
    sep = str(encoding.separator)

    def strict_error() -> ManifestError:
        for s in suffixes:
            try:
                encoding.decode(s, ndim)
            except InvalidKeyError as exc:
                return ManifestError(f"manifest key {where + '/' + s!r}: {exc}")
        return ManifestError(f"{where}: malformed chunk keys")

    if encoding.name == "default":
        if ndim == 0:
            if any(s != "c" for s in suffixes):
                raise strict_error()
            return np.zeros((n, 0), np.int64)
        prefix = "c" + sep
        if not all(s.startswith(prefix) for s in suffixes):
            raise strict_error()
        body = [s[2:] for s in suffixes]
    else:
        if ndim == 0:
            if any(s != "0" for s in suffixes):
                raise strict_error()
            return np.zeros((n, 0), np.int64)
        body = suffixes
    joined = sep.join(body)
    parts = joined.split(sep)
    if len(parts) != n * ndim or not joined.replace(sep, "").isascii() or not joined.replace(sep, "").isdigit():
        raise strict_error()
    # Leading zeros ("01") are not canonical: such a key would alias another chunk; more than 18
    # digits could overflow int64.
    if _LEADING_ZERO[sep].search(joined) or _TOO_LONG.search(joined):
        raise strict_error()
    return np.fromiter(map(int, parts), np.int64, len(parts)).reshape(n, ndim)


def _build_table(
    m: Manifest,
    path: str,
    grid: tuple[int, ...],
    encoding: ChunkKeyEncoding,
    idx: list[int],
    entries: _Entries,
) -> ChunkTable:
    table = ChunkTable.empty(grid)
    if not idx:
        return table
    plen = len(path) + 1
    suffixes = [entries.keys[i][plen:] for i in idx]
    coords = parse_chunk_keys(suffixes, encoding, len(grid), path)
    if coords.shape[0] and grid:
        over = (coords >= np.asarray(grid, np.int64)).any(axis=1)
        if over.any():
            bad = entries.keys[idx[int(np.nonzero(over)[0][0])]]
            raise ManifestError(f"manifest key {bad!r} is outside the chunk grid {grid} of array {path!r}")
    flat = table.flat_indices(coords)
    if np.unique(flat).size != flat.size:
        raise ManifestError(f"array {path!r}: several manifest keys name the same chunk")
    urls = [entries.urls[i] for i in idx]
    is_ref = np.fromiter((u is not None for u in urls), bool, len(urls))
    ref_pos = np.nonzero(is_ref)[0]
    if ref_pos.size:
        ref_urls = urls if ref_pos.size == len(urls) else [urls[i] for i in ref_pos.tolist()]
        # Distinct URLs through a dict (C speed), not a sort of a million strings.
        ids_of = dict.fromkeys(ref_urls)
        for u in ids_of:
            ids_of[u] = m.add_source(u)
        ids = np.fromiter(map(ids_of.__getitem__, ref_urls), np.int64, len(ref_urls))
        idx_arr = np.asarray(idx, np.int64)[ref_pos]
        table.set_refs(flat[ref_pos], ids, entries.offsets_array()[idx_arr], entries.lengths_array()[idx_arr])
    for j in np.nonzero(~is_ref)[0].tolist():
        table._set_inline_flat(int(flat[j]), entries.data[idx[j]])
    return table


def read_kerchunk(url: str, *, target: str | None = None, **storage_options: Any) -> Manifest:
    """Load kerchunk JSON references (version 0 or 1; ``.gz``/``.zst`` inferred) from ``url``.

    Raises
    ------
    ManifestError
        Oversized, malformed or hostile content (naming the key or field).
    """
    data = _read_bytes(url, storage_options)
    return from_kerchunk(parse_json(data, f"manifest {url!r}"), location=url, target=target)


# ---------------------------------------------------------------------------------------------
# v3 -> v2 metadata
# ---------------------------------------------------------------------------------------------

_V3_NUMERIC = {
    "bool": "b1",
    "int8": "i1",
    "int16": "i2",
    "int32": "i4",
    "int64": "i8",
    "uint8": "u1",
    "uint16": "u2",
    "uint32": "u4",
    "uint64": "u8",
    "float16": "f2",
    "float32": "f4",
    "float64": "f8",
    "complex64": "c8",
    "complex128": "c16",
}
_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_OBJECT_CODECS = {"vlen-utf8", "vlen-bytes"}


def _v2_typestr(data_type: Any, endian: str, path: str) -> Any:
    """numpy typestr (or structured list) of a v3 data type with the given byte order."""
    order = ">" if endian == "big" else "<"

    def fail(why: str) -> ManifestError:
        return ManifestError(f"array {path!r}: field 'data_type' {data_type!r} cannot be written as Zarr v2: {why}")

    if isinstance(data_type, str):
        if data_type in _V3_NUMERIC:
            code = _V3_NUMERIC[data_type]
            return ("|" if code in ("b1", "i1", "u1") else order) + code
        if data_type in ("string", "variable_length_bytes", "bytes"):
            return "|O"
        m = re.fullmatch(r"r(\d+)", data_type)
        if m and int(m.group(1)) % 8 == 0 and int(m.group(1)) > 0:
            return f"|V{int(m.group(1)) // 8}"
        raise fail("unknown data type")
    if not isinstance(data_type, dict) or "name" not in data_type:
        raise fail("not a data type")
    name, conf = data_type["name"], data_type.get("configuration") or {}
    if name in ("null_terminated_bytes", "raw_bytes", "fixed_length_utf32"):
        nbytes = conf.get("length_bytes")
        if type(nbytes) is not int or nbytes <= 0:
            raise fail("length_bytes must be a positive integer")
        if name == "null_terminated_bytes":
            return f"|S{nbytes}"
        if name == "raw_bytes":
            return f"|V{nbytes}"
        if nbytes % 4:
            raise fail("length_bytes must be a multiple of 4")
        return f"{order}U{nbytes // 4}"
    if name in ("numpy.datetime64", "numpy.timedelta64"):
        unit, scale = conf.get("unit"), conf.get("scale_factor", 1)
        if not isinstance(unit, str) or type(scale) is not int or scale < 1:
            raise fail("needs a unit and a positive integer scale_factor")
        kind = "M" if name == "numpy.datetime64" else "m"
        return f"{order}{kind}8[{'' if scale == 1 else scale}{unit}]"
    if name in ("structured", "struct"):
        fields = conf.get("fields")
        if not isinstance(fields, list):
            raise fail("fields must be a list")
        out = []
        for f in fields:
            if name == "structured" and isinstance(f, list) and len(f) == 2:
                fname, fdt = f
            elif name == "struct" and isinstance(f, dict):
                fname, fdt = f.get("name"), f.get("data_type")
            else:
                raise fail(f"bad field {f!r}")
            out.append([fname, _v2_typestr(fdt, endian, path)])
        return out
    raise fail("unknown data type")


def _v2_fill(fill: Any, typestr: Any, path: str) -> Any:
    """v2 ``fill_value`` of a v3 one (same JSON forms except float bit patterns and structs)."""
    if isinstance(typestr, list):
        if isinstance(fill, dict):
            dt = np.dtype([tuple(f) for f in typestr])
            rec = np.zeros((), dt)
            for k, v in fill.items():
                rec[k] = _float_from_json(v) if isinstance(v, str) else v
            return base64.b64encode(rec.tobytes()).decode()
        return fill
    kind = typestr[1]
    if kind in "fc":
        if isinstance(fill, list):
            return [_float_to_v2(_float_from_json(v)) for v in fill]
        return _float_to_v2(_float_from_json(fill))
    if kind in "mM" and fill == "NaT":
        return -(2**63)
    if kind == "O" and fill is None:
        return None
    return fill


def _v2_fill_value(path: str, doc: dict, attrs: dict, typestr: Any, has_missing: bool) -> Any:
    storage = _v2_fill(doc.get("fill_value"), typestr, path)
    if "_FillValue" in attrs:
        cf = _cf_fill_to_v2(attrs["_FillValue"], typestr)
        if cf is not _NO_FILL:
            if has_missing and not _same_fill(cf, storage):
                raise ManifestError(
                    f"array {path!r}: field 'fill_value' cannot be written as Zarr v2: missing chunks read "
                    f"as {storage!r} but the _FillValue attribute is {cf!r}, and v2 has one fill value for both"
                )
            del attrs["_FillValue"]
            return cf
        # A _FillValue that does not fit the data type stays an attribute, as it was.
    if has_missing and storage not in (None, 0, False, "", 0.0):
        return storage
    return None


def _float_from_json(v: Any) -> float:
    if isinstance(v, str) and v.startswith("0x"):
        bits = int(v, 16)
        width = {6: np.float16, 10: np.float32, 18: np.float64}.get(len(v))
        if width is None:
            raise ManifestError(f"bad hex float fill value {v!r}")
        itype = {np.float16: np.uint16, np.float32: np.uint32, np.float64: np.uint64}[width]
        return float(np.array(bits, itype).view(width))
    if v == "NaN":
        return math.nan
    if v == "Infinity":
        return math.inf
    if v == "-Infinity":
        return -math.inf
    return v


def _float_to_v2(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
    return v


def _v2_codec(codec: Any, path: str) -> dict:
    name, conf = codec["name"], dict(codec.get("configuration") or {})
    if name == "gzip":
        return {"id": "gzip", "level": conf.get("level", 5)}
    if name == "zstd":
        out = {"id": "zstd", "level": conf.get("level", 0)}
        if conf.get("checksum"):
            out["checksum"] = True
        return out
    if name == "blosc":
        shuffle = conf.get("shuffle", "noshuffle")
        if shuffle not in _BLOSC_SHUFFLE:
            raise ManifestError(f"array {path!r}: field 'codecs' blosc shuffle {shuffle!r} is unknown")
        return {
            "id": "blosc",
            "cname": conf.get("cname", "lz4"),
            "clevel": conf.get("clevel", 5),
            "shuffle": _BLOSC_SHUFFLE[shuffle],
            "blocksize": conf.get("blocksize", 0),
        }
    if name == "crc32c":
        return {"id": "crc32c"}
    if name.startswith("numcodecs."):
        return {"id": name[len("numcodecs.") :], **conf}
    if name in _OBJECT_CODECS:
        return {"id": name}
    raise ManifestError(f"array {path!r}: field 'codecs': codec {name!r} cannot be written as Zarr v2")


def _same_fill(a: Any, b: Any) -> bool:
    fa, fb = _float_from_json(a), _float_from_json(b)
    if isinstance(fa, float) and isinstance(fb, float) and math.isnan(fa) and math.isnan(fb):
        return True
    return fa == fb


def _cf_fill_to_v2(value: Any, typestr: Any) -> Any:
    """A v3 ``_FillValue`` attribute (xarray's v3 encoding) as a v2 ``fill_value``, or _NO_FILL.

    xarray writes float fills as base64 of a little-endian double (complex: a pair), bytes as
    base64, integers and bools plain; plain numbers are accepted for floats too.
    """
    if isinstance(typestr, list):
        return _NO_FILL
    kind = typestr[1]
    try:
        if kind == "f":
            if isinstance(value, str) and value not in ("NaN", "Infinity", "-Infinity"):
                return _float_to_v2(struct.unpack("<d", base64.b64decode(value, validate=True))[0])
            if isinstance(value, (int, float)) or value in ("NaN", "Infinity", "-Infinity"):
                return _float_to_v2(_float_from_json(value))
        elif kind == "c" and isinstance(value, list) and len(value) == 2:
            return [
                _float_to_v2(struct.unpack("<d", base64.b64decode(v, validate=True))[0])
                if isinstance(v, str) and v not in ("NaN", "Infinity", "-Infinity")
                else _float_to_v2(_float_from_json(v))
                for v in value
            ]
        elif kind in "iu" and type(value) is int:
            return value
        elif kind == "b" and isinstance(value, bool):
            return value
        elif kind in "SV" and isinstance(value, str):
            base64.b64decode(value, validate=True)
            return value
        elif kind == "U" and isinstance(value, str):
            return value
    except (binascii.Error, ValueError, struct.error):
        return _NO_FILL
    return _NO_FILL


_NO_FILL = object()


def v3_to_v2_documents(path: str, docs: Mapping[str, dict], *, has_missing: bool = True) -> dict[str, dict]:
    """Zarr v2 documents (``.zarray``/``.zgroup`` + ``.zattrs``) equivalent to a v3 node.

    Fill values follow each format's xarray convention: in v3 the CF ``_FillValue`` is an
    attribute and ``fill_value`` is what missing chunks read as; in v2 ``fill_value`` *is* the CF
    ``_FillValue``.  So the v2 ``fill_value`` is the ``_FillValue`` attribute when there is one
    (it must then equal the v3 ``fill_value`` if chunks are missing), else the v3 ``fill_value``
    when chunks are missing (``has_missing``) and it is not zero, else null.

    Raises
    ------
    ManifestError
        Naming the array and field when v2 cannot express the node (rectilinear grid, sharding,
        storage transformers, a transpose other than C/F order, an unknown codec or data type).
    """
    if V3_DOC not in docs:
        return {k: v for k, v in docs.items()}
    doc = docs[V3_DOC]
    attrs = dict(doc.get("attributes") or {})
    if doc.get("node_type") == "group":
        out: dict[str, dict] = {V2_GROUP_DOC: {"zarr_format": 2}}
        if attrs:
            out[V2_ATTRS_DOC] = attrs
        return out

    def fail(field: str, why: str) -> ManifestError:
        return ManifestError(f"array {path!r}: field {field!r} cannot be written as Zarr v2: {why}")

    shape = doc.get("shape")
    if not isinstance(shape, list):
        raise fail("shape", f"not a list: {shape!r}")
    if doc.get("storage_transformers"):
        raise fail("storage_transformers", "v2 has no storage transformers")
    grid = doc.get("chunk_grid")
    if not isinstance(grid, dict) or grid.get("name") != "regular":
        gname = grid.get("name") if isinstance(grid, dict) else grid
        raise fail("chunk_grid", f"only regular grids exist in v2, this one is {gname!r}")
    chunks = (grid.get("configuration") or {}).get("chunk_shape")
    if not isinstance(chunks, list) or len(chunks) != len(shape):
        raise fail("chunk_grid", f"bad chunk_shape {chunks!r}")
    codecs = doc.get("codecs")
    if not isinstance(codecs, list) or not codecs:
        raise fail("codecs", "missing codec list")
    ndim = len(shape)
    order = "C"
    filters: list[dict] = []
    endian = "little"
    object_codec: dict | None = None
    stage = "aa"
    bb: list[dict] = []
    for c in codecs:
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise fail("codecs", f"bad codec entry {c!r}")
        name, conf = c["name"], c.get("configuration") or {}
        if name == "sharding_indexed":
            raise fail("codecs", "sharding_indexed has no v2 equivalent")
        if stage == "aa":
            if name == "transpose":
                perm = conf.get("order")
                if perm == list(range(ndim)):
                    continue
                if perm == list(range(ndim))[::-1] and order == "C" and not filters:
                    order = "F"
                    continue
                raise fail("codecs", f"transpose order {perm!r} is neither C nor F order")
            if name == "bytes":
                endian = conf.get("endian", "little")
                stage = "bb"
                continue
            if name in _OBJECT_CODECS:
                object_codec = {"id": name}
                stage = "bb"
                continue
            if name.startswith("numcodecs."):
                filters.append(_v2_codec(c, path))
                continue
            raise fail("codecs", f"array->array codec {name!r} has no v2 equivalent")
        else:
            bb.append(_v2_codec(c, path))
    if stage != "bb":
        raise fail("codecs", "no array->bytes codec")
    typestr = _v2_typestr(doc.get("data_type"), endian, path)
    if object_codec is not None:
        if filters:
            raise fail("codecs", "array->array codecs before an object codec")
        filters = [object_codec]
    elif typestr == "|O":
        raise fail("codecs", "a variable-length data type needs vlen-utf8 or vlen-bytes")
    filters.extend(bb[:-1])
    zarray = {
        "zarr_format": 2,
        "shape": shape,
        "chunks": chunks,
        "dtype": typestr,
        "compressor": bb[-1] if bb else None,
        "fill_value": _v2_fill_value(path, doc, attrs, typestr, has_missing),
        "order": order,
        "filters": filters or None,
        "dimension_separator": ".",
    }
    dims = doc.get("dimension_names")
    # xarray needs the attribute on every array, a 0-d one included ([]).
    if isinstance(dims, list) and len(dims) == ndim and all(isinstance(d, str) for d in dims):
        attrs.setdefault("_ARRAY_DIMENSIONS", list(dims))
    out = {V2_ARRAY_DOC: zarray}
    if attrs:
        out[V2_ATTRS_DOC] = attrs
    return out


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _inline_value(data: bytes) -> str:
    # kerchunk's rule: text when the bytes are ASCII (and cannot be mistaken for base64: data).
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if text is not None and not text.startswith("base64:"):
        return text
    return "base64:" + base64.b64encode(data).decode("ascii")


def to_kerchunk_json(manifest: Manifest, *, templates: bool = True) -> str:
    """The manifest as kerchunk version 1 JSON text (Zarr v2 metadata, canonical key order).

    Parameters
    ----------
    manifest
        What to write.
    templates
        Replace source URLs used by more than one reference with ``{{u<i>}}`` templates.
    """
    dumps = json.dumps
    pieces: list[str] = []
    # Sources: absolute URLs (a relative one means "next to the manifest", which fsspec would
    # resolve against the reader's working directory instead).
    urls = [resolve_url(s.url, manifest.location) for s in manifest.sources]
    counts = np.zeros(len(urls), np.int64)
    for t in manifest.tables.values():
        mask = t.present() & (t.source >= 0)
        if mask.any():
            counts += np.bincount(t.source[mask], minlength=len(urls))[: len(urls)]
    template_map: dict[str, str] = {}
    url_text: list[str] = []
    for i, u in enumerate(urls):
        if templates and counts[i] > 1:
            name = f"u{len(template_map)}"
            template_map[name] = u
            url_text.append(dumps("{{" + name + "}}"))
        else:
            url_text.append(dumps(u))

    for path in sorted(manifest.nodes, key=lambda p: (p.count("/"), p)):
        table = manifest.tables.get(path)
        has_missing = table is not None and not bool(table.present().all())
        docs = v3_to_v2_documents(path, manifest.nodes[path], has_missing=has_missing)
        prefix = f"{path}/" if path else ""
        for name in (V2_GROUP_DOC, V2_ARRAY_DOC, V2_ATTRS_DOC):
            if name in docs:
                pieces.append(f"{dumps(prefix + name)}:{dumps(dumps(docs[name]))}")
        if path not in manifest.tables:
            continue
        table = manifest.tables[path]
        zarray = docs[V2_ARRAY_DOC]
        enc = ChunkKeyEncoding.from_dimension_separator(zarray.get("dimension_separator"))
        flat = np.nonzero(table.present())[0]
        if flat.size == 0:
            continue
        coords = np.stack(np.unravel_index(flat, table.grid_shape), axis=1) if table.grid_shape else (
            np.zeros((flat.size, 0), np.int64)
        )
        keys = enc.encode_many(coords)
        key_prefix = dumps(prefix)[:-1]  # opening quote + escaped prefix
        src = table.source[flat].tolist()
        off = table.offset[flat].tolist()
        ln = table.length[flat].tolist()
        whole = int(WHOLE)
        for j, k in enumerate(keys):
            s = src[j]
            if s == INLINE:
                value = dumps(_inline_value(table.inline[int(flat[j])]))
            elif ln[j] == whole:
                value = f"[{url_text[s]}]"
            else:
                value = f"[{url_text[s]},{off[j]},{ln[j]}]"
            pieces.append(f'{key_prefix}{k}":{value}')
    head = '{"version":1,'
    if template_map:
        head += f'"templates":{dumps(template_map)},'
    return head + '"refs":{' + ",".join(pieces) + "}}"


def to_kerchunk(manifest: Manifest, *, templates: bool = True) -> dict:
    """The manifest as a kerchunk version 1 dict (see :func:`to_kerchunk_json`)."""
    return json.loads(to_kerchunk_json(manifest, templates=templates))


def write_kerchunk(manifest: Manifest, url: str, *, templates: bool = True, **storage_options: Any) -> None:
    """Write the manifest as kerchunk version 1 JSON to ``url`` (compression inferred)."""
    import fsspec

    text = to_kerchunk_json(manifest, templates=templates).encode("utf-8")
    with fsspec.open(url, "wb", compression="infer", **storage_options) as f:
        f.write(text)

