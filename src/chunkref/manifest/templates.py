"""Safe substitution for kerchunk reference templates and ``gen`` generators.

kerchunk version 1 references may contain jinja-style placeholders: ``{{u}}`` in URLs (a name
from ``templates``) and, in ``gen`` entries, expressions over generator dimensions such as
``{{(i + 1) * 1000}}``.  fsspec fills simple templates with ``str.format`` (which follows
attribute and item lookups: ``{u.__class__}``) and ``gen`` with a jinja sandbox.  We run no
template engine at all: a placeholder is either a template name or a small integer arithmetic
expression (integers, dimension names, ``+ - * // / %``, parentheses), parsed here and
evaluated with numpy over every generator position at once.  Anything else (attribute access,
filters, calls, ``{% ... %}`` blocks) raises :class:`~chunkref.errors.ManifestError` naming the
key or field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from chunkref.errors import ManifestError

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(//|[-+*/%()]))")
_MAX_EXPR_CHARS = 256
_MAX_EXPR_DEPTH = 32


def check_no_template_syntax(text: str, where: str) -> None:
    """Refuse leftover template syntax (``{{``, ``{%``, ``{#``) in a finished string."""
    for marker in ("{{", "{%", "{#"):
        if marker in text:
            raise ManifestError(f"{where}: unsupported template syntax {marker!r} in {text!r}")


def substitute(text: str, templates: Mapping[str, str], where: str) -> str:
    """Replace every ``{{ name }}`` in ``text`` by ``templates[name]`` (literal, no formatting)."""
    if "{" not in text:
        return text

    def repl(m: re.Match) -> str:
        name = m.group(1).strip()
        if not _NAME.match(name):
            raise ManifestError(f"{where}: template placeholder {m.group(0)!r} is not a plain name")
        try:
            return templates[name]
        except KeyError:
            raise ManifestError(f"{where}: unknown template {name!r} in {text!r}") from None

    out = _PLACEHOLDER.sub(repl, text)
    # A template value may not itself introduce placeholders (no recursive expansion).
    check_no_template_syntax(_PLACEHOLDER.sub("", text), where)
    return out


# -- gen expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Num:
    value: int


@dataclass(frozen=True)
class _Var:
    name: str


@dataclass(frozen=True)
class _Neg:
    operand: object


@dataclass(frozen=True)
class _Bin:
    op: str
    left: object
    right: object


def _tokenize(expr: str, where: str) -> list[tuple[str, str]]:
    if len(expr) > _MAX_EXPR_CHARS:
        raise ManifestError(f"{where}: template expression longer than {_MAX_EXPR_CHARS} characters")
    tokens: list[tuple[str, str]] = []
    pos = 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            raise ManifestError(f"{where}: unsupported template expression {expr!r} (at {expr[pos:]!r})")
        num, name, op = m.groups()
        tokens.append(("num", num) if num else ("name", name) if name else ("op", op))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], expr: str, where: str) -> None:
        self.tokens = tokens
        self.i = 0
        self.expr = expr
        self.where = where
        self.depth = 0

    def fail(self, why: str) -> ManifestError:
        return ManifestError(f"{self.where}: bad template expression {self.expr!r}: {why}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end")
        self.i += 1
        return tok

    def parse(self) -> object:
        node = self.sum()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")
        return node

    def sum(self) -> object:
        node = self.product()
        while (tok := self.peek()) is not None and tok in (("op", "+"), ("op", "-")):
            self.take()
            node = _Bin(tok[1], node, self.product())
        return node

    def product(self) -> object:
        node = self.unary()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in ("*", "/", "//", "%"):
            self.take()
            node = _Bin(tok[1], node, self.unary())
        return node

    def unary(self) -> object:
        tok = self.peek()
        if tok in (("op", "-"), ("op", "+")):
            self.take()
            self.depth += 1
            if self.depth > _MAX_EXPR_DEPTH:
                raise self.fail("nested too deeply")
            operand = self.unary()
            self.depth -= 1
            return _Neg(operand) if tok[1] == "-" else operand
        return self.atom()

    def atom(self) -> object:
        kind, text = self.take()
        if kind == "num":
            if len(text) > 19:
                raise self.fail(f"integer {text} too large")
            return _Num(int(text))
        if kind == "name":
            return _Var(text)
        if text == "(":
            self.depth += 1
            if self.depth > _MAX_EXPR_DEPTH:
                raise self.fail("nested too deeply")
            node = self.sum()
            self.depth -= 1
            if self.take() != ("op", ")"):
                raise self.fail("missing ')'")
            return node
        raise self.fail(f"unexpected {text!r}")


def _evaluate(node: object, dims: Mapping[str, np.ndarray], where: str, expr: str) -> np.ndarray:
    if isinstance(node, _Num):
        return np.int64(node.value)
    if isinstance(node, _Var):
        if node.name not in dims:
            raise ManifestError(f"{where}: unknown name {node.name!r} in template expression {expr!r}")
        return dims[node.name]
    if isinstance(node, _Neg):
        return -_evaluate(node.operand, dims, where, expr)
    assert isinstance(node, _Bin)
    a = np.asarray(_evaluate(node.left, dims, where, expr), dtype=np.int64)
    b = np.asarray(_evaluate(node.right, dims, where, expr), dtype=np.int64)
    # Python ints could grow without bound; int64 overflow would wrap silently. Bound both.
    if np.abs(a).max(initial=0) > 2**62 or np.abs(b).max(initial=0) > 2**62:
        raise ManifestError(f"{where}: template expression {expr!r} overflows")
    if node.op == "+":
        return a + b
    if node.op == "-":
        return a - b
    if node.op == "*":
        fa = a.astype(np.float64) * b.astype(np.float64)
        if np.abs(fa).max(initial=0) > 2**62:
            raise ManifestError(f"{where}: template expression {expr!r} overflows")
        return a * b
    if (b == 0).any():
        raise ManifestError(f"{where}: division by zero in template expression {expr!r}")
    if node.op == "//":
        return a // b
    if node.op == "%":
        return a % b
    # "/" is true division in jinja; only exact integer results are meaningful for offsets.
    if (a % b != 0).any():
        raise ManifestError(f"{where}: template expression {expr!r} does not give an integer")
    return a // b


@dataclass(frozen=True)
class CompiledTemplate:
    """A template string split into literal text and placeholders (names or expressions)."""

    parts: tuple[object, ...]  # str literals, or ("name", str), or ("expr", node, source)
    where: str

    def render(self, dims: Mapping[str, np.ndarray], templates: Mapping[str, str], n: int) -> np.ndarray:
        """The rendered strings, one per generator position (numpy str array of length ``n``)."""
        out = np.full(n, "", dtype=np.str_)
        for part in self.parts:
            if isinstance(part, str):
                piece: np.ndarray | str = part
            elif part[0] == "name" and part[1] in dims:
                piece = np.broadcast_to(dims[part[1]], (n,)).astype(np.str_)
            elif part[0] == "name":
                piece = templates[part[1]]
            else:
                piece = np.broadcast_to(_evaluate(part[1], dims, self.where, part[2]), (n,)).astype(np.str_)
            out = np.strings.add(out, piece)
        return out

    def render_int(self, dims: Mapping[str, np.ndarray], templates: Mapping[str, str], n: int) -> np.ndarray:
        """Render a template that must produce an integer per position (offset, length)."""
        if len(self.parts) == 1 and not isinstance(self.parts[0], str):
            part = self.parts[0]
            if part[0] == "expr" or part[1] in dims:
                value = dims[part[1]] if part[0] == "name" else _evaluate(part[1], dims, self.where, part[2])
                return np.broadcast_to(np.asarray(value, dtype=np.int64), (n,))
        text = self.render(dims, templates, n)
        ok = np.strings.isdigit(np.strings.lstrip(text, "-"))
        if not ok.all():
            bad = text[~ok][0]
            raise ManifestError(f"{self.where}: rendered value {bad!r} is not an integer")
        if np.strings.str_len(text).max(initial=0) > 19:
            raise ManifestError(f"{self.where}: rendered integer too large")
        return text.astype(np.int64)


def compile_template(
    text: str, names: set[str], dims: set[str], where: str, *, allow_expressions: bool
) -> CompiledTemplate:
    """Parse ``text`` into a :class:`CompiledTemplate` (validates every placeholder)."""
    if not isinstance(text, str):
        raise ManifestError(f"{where}: expected a string template, got {type(text).__name__}")
    parts: list[object] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        body = m.group(1).strip()
        if _NAME.match(body):
            if body not in names and body not in dims:
                raise ManifestError(f"{where}: unknown template name {body!r} in {text!r}")
            parts.append(("name", body))
        elif allow_expressions:
            node = _Parser(_tokenize(body, where), body, where).parse()
            parts.append(("expr", node, body))
        else:
            raise ManifestError(f"{where}: template placeholder {m.group(0)!r} is not a plain name")
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    check_no_template_syntax("".join(p for p in parts if isinstance(p, str)), where)
    return CompiledTemplate(tuple(parts), where)
