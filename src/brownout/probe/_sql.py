"""SQL fingerprints: the normalized statement the DB detectors group by, and parameter keys.

:func:`fingerprint` turns a statement into its shape, so every execution of the same code
path maps to one string whatever its values::

    SELECT * FROM reviews WHERE product_id = 42 AND note > 3.5   -- hot path
    -> select * from reviews where product_id = ? and note > ?

The rules, applied by one tokenizer pass (never raises, whatever the input):

- literals become ``?``: strings (``'it''s'``, ``E'\\n'``, ``N'x'``, ``X'ff'``, dollar
  quoted ``$tag$...$tag$``), numbers (``42``, ``-`` is kept apart: ``-?``), ``0x1f`` and
  the booleans ``true``/``false``; ``null`` is kept;
- placeholders of every DB-API style become ``?``: ``?``, ``$1``, ``:name``, ``%s``,
  ``%(name)s`` (``::int`` casts are not placeholders);
- the list after ``IN`` and the row list after ``VALUES`` collapse to ``(?...)`` when they
  hold only values (``in (?, ?, ?)``, ``values (?, ?), (?, null)``), so a batch of any size
  has one fingerprint; ``IN (SELECT ...)`` is kept;
- comments (``-- ...``, ``/* ... */``) go, whitespace is rebuilt canonically (one space
  between tokens, none inside parentheses, before ``,`` ``.`` ``;`` or after ``.`` ``::``);
- unquoted ASCII words (keywords and identifiers, which SQL folds anyway) are lower-cased;
  quoted identifiers (``"Name"``, backticks) are kept as written.

The output is a fixed point: ``fingerprint(fingerprint(s)) == fingerprint(s)``.

:class:`Fingerprinter` caches fingerprints by statement text (ORMs send the same few
hundred statement strings over and over), bounded: when full it starts afresh.
:func:`params_key` is a short hash of the parameters.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["Fingerprinter", "fingerprint", "params_key"]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
    | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<list>\(\?\.\.\.\))
    | (?P<estr>[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<str>[nNbBxX]?'(?:[^']|'')*(?:'|\Z))
    | (?P<dollar>\$\$.*?(?:\$\$|\Z)|\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<qid>"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z))
    | (?P<op>::|<=|>=|<>|!=|\|\||->>|->|\#>>|\#>|@>|<@)
    | (?P<param>\$[0-9]+|%\([^)]*\)s|%s|\?|:[A-Za-z_][A-Za-z0-9_]*)
    | (?P<word>(?:[^\W\d]|_)[\w$]*)
    | (?P<num>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

# Tokens of a value list that may collapse to (?...).
_LIST_ITEMS = frozenset({"?", ",", "null", "default", "(?...)"})
# Words after which "(" is an expression, not a call: a space separates them.
_SPACED_BEFORE_PAREN = frozenset(
    [
        "all",
        "and",
        "any",
        "as",
        "between",
        "by",
        "case",
        "else",
        "except",
        "exists",
        "filter",
        "from",
        "having",
        "in",
        "intersect",
        "into",
        "is",
        "join",
        "lateral",
        "like",
        "limit",
        "not",
        "offset",
        "on",
        "or",
        "over",
        "returning",
        "select",
        "set",
        "some",
        "then",
        "union",
        "using",
        "values",
        "when",
        "where",
        "with",
    ]
)
_BOOLEANS = frozenset({"true", "false"})
_LITERAL_GROUPS = frozenset({"estr", "str", "dollar", "num", "param"})


def _tokens(sql: str) -> list[str]:
    out: list[str] = []
    append = out.append
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        if kind in _LITERAL_GROUPS:
            append("?")
        elif kind == "word":
            word = m.group()
            if word.isascii():
                word = word.lower()
                if word in _BOOLEANS:
                    word = "?"
            append(word)
        else:
            append(m.group())
    return out


def _value_group_end(tokens: list[str], start: int) -> int:
    """Index past the ``( ... )`` group at ``start`` when it holds only values, else -1."""
    if tokens[start] == "(?...)":
        return start + 1
    if tokens[start] != "(":
        return -1
    i = start + 1
    n = len(tokens)
    while i < n and tokens[i] in _LIST_ITEMS:
        i += 1
    if i < n and tokens[i] == ")" and i > start + 1:
        return i + 1
    return -1


def _collapse(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        out.append(tok)
        i += 1
        if tok == "in" and i < n:
            end = _value_group_end(tokens, i)
            if end > 0:
                out.append("(?...)")
                i = end
        elif tok == "values" and i < n:
            end = _value_group_end(tokens, i)
            if end > 0:
                # further rows: "," then another value group
                while end + 1 < n and tokens[end] == ",":
                    nxt = _value_group_end(tokens, end + 1)
                    if nxt < 0:
                        break
                    end = nxt
                out.append("(?...)")
                i = end
    return out


def _wordish_end(tok: str) -> bool:
    c = tok[-1]
    return c.isalnum() or c in '_"`)?*$'


def _wordish_start(tok: str) -> bool:
    c = tok[0]
    return c.isalnum() or c in '_"`*'


def _glued(prev: str, tok: str) -> bool:
    """Whether ``tok`` follows ``prev`` without a space. Only pairs that cannot re-tokenize
    differently are glued (``a.b``, ``x::int``, ``count(``, ``(a``, ``a)``, ``a,``)."""
    if tok in (")", ",", ";") or prev == "(":
        return True
    if tok in (".", "::"):
        return _wordish_end(prev)
    if prev in (".", "::"):
        return _wordish_start(tok)
    if tok[0] == "(":
        return prev not in _SPACED_BEFORE_PAREN and (prev[0].isalnum() or prev[0] in '_"`')
    return False


def _join(tokens: list[str]) -> str:
    parts: list[str] = []
    prev = ""
    for tok in tokens:
        if parts and not _glued(prev, tok):
            parts.append(" ")
        parts.append(tok)
        prev = tok
    return "".join(parts)


def fingerprint(sql: str) -> str:
    """The normalized shape of ``sql`` (rules in the module docstring). Pure and uncached;
    hooks use a :class:`Fingerprinter`."""
    return _join(_collapse(_tokens(sql)))


class Fingerprinter:
    """:func:`fingerprint` with a cache keyed by statement text, of at most ``max_entries``
    statements (when full, the cache is cleared and refilled: ORMs reuse a bounded set of
    strings, so this almost never happens, and clearing costs nothing per call)."""

    __slots__ = ("cache", "max_entries")

    def __init__(self, max_entries: int = 4096) -> None:
        self.cache: dict[str, str] = {}  # statement -> fingerprint (hooks read it directly)
        self.max_entries = max_entries

    def __call__(self, sql: str) -> str:
        cache = self.cache
        fp = cache.get(sql)
        if fp is None:
            fp = fingerprint(sql)
            if len(cache) >= self.max_entries:
                cache.clear()
            cache[sql] = fp
        return fp

    def __len__(self) -> int:
        return len(self.cache)

    def __repr__(self) -> str:
        return f"Fingerprinter(max_entries={self.max_entries}, cached={len(self.cache)})"


def params_key(params: object) -> str | None:
    """A 16-hex-digit blake2b hash of ``repr(params)``, or ``None`` when there are no
    parameters (``None`` or empty). Equal parameters give equal keys; values are never kept.
    Parameters whose ``repr`` fails are keyed by their type name."""
    if params is None:
        return None
    try:
        if not params and isinstance(params, tuple | list | dict):
            return None
        text = repr(params)
    except Exception:
        text = type(params).__name__
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
