"""Reading what the report shows besides results: probe ledgers and the demo's summary.json.

Both readers are tolerant: they check what the report relies on (a JSON object, a known
schema and version when the document states one, lists and objects where the report walks
them) and show missing fields as blanks. They never import the probe (layers: ``report``
reads results and ledgers, never a runtime); the ledger format is ``docs/ledger.md``
(``{"schema": "brownout.ledger", "version": 1, "endpoints": {...}, "findings": [...]}``).

Errors are :class:`~brownout.errors.ResultsError` naming the field, with ``source`` set to
the file when read from one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ResultsError

__all__ = [
    "LEDGER_SCHEMA",
    "LEDGER_VERSION",
    "SUMMARY_FIGURES",
    "check_ledger",
    "check_summary",
    "load_ledger",
    "load_summary",
    "read_json",
    "run_labels",
]

LEDGER_SCHEMA = "brownout.ledger"
LEDGER_VERSION = 1
SUMMARY_FIGURES = ("people_goodput_ratio", "p99_ms", "recovery_s", "knee_rps")
"""The figures the demo's summary.json holds for ``naive``, ``guarded`` and ``predicted``."""


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """The JSON value in the file at ``path``; one ResultsError line when it cannot be read
    or is not JSON (``what`` names the document in the message's field)."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(
            "file", name, f"a readable {what} file ({exc.strerror or exc})", source=name
        ) from None
    except UnicodeDecodeError:
        raise ResultsError("file", name, f"a UTF-8 {what} file", source=name) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(
            what, f"line {exc.lineno} column {exc.colno}", f"JSON ({exc.msg})", source=name
        ) from None


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_ledger(doc: object, *, source: str | None = None) -> dict[str, Any]:
    """Check a ledger document and return it as a dict.

    Refused: anything but a JSON object; a ``schema`` other than ``"brownout.ledger"``; a
    ``version`` (or ``schema_version``) other than 1; ``findings`` that is not a list of
    objects; ``endpoints`` that is not an object. Anything else missing is shown blank.
    """
    if not isinstance(doc, Mapping):
        raise ResultsError("ledger", type(doc).__name__, "a JSON object", source=source)
    if "schema" in doc and doc["schema"] != LEDGER_SCHEMA:
        raise ResultsError("schema", doc["schema"], repr(LEDGER_SCHEMA), source=source)
    for name in ("version", "schema_version"):
        if name in doc and doc[name] != LEDGER_VERSION:
            raise ResultsError(
                name, doc[name], f"{LEDGER_VERSION} (this brownout reads ledger version 1)", source
            )
    findings = doc.get("findings", [])
    if not isinstance(findings, list):
        raise ResultsError("findings", findings, "a list", source=source)
    for i, item in enumerate(findings):
        if not isinstance(item, Mapping):
            raise ResultsError(f"findings[{i}]", item, "an object", source=source)
    endpoints = doc.get("endpoints", {})
    if not isinstance(endpoints, Mapping):
        raise ResultsError("endpoints", endpoints, "an object of endpoint: stats", source=source)
    return dict(doc)


def load_ledger(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a probe ledger file (see :func:`check_ledger`)."""
    name = os.fspath(path)
    return check_ledger(read_json(name, "ledger"), source=name)


def check_summary(doc: object, *, source: str | None = None) -> dict[str, Any]:
    """Check a summary document (the demo's ``summary.json``) and return it as a dict.

    It must be a JSON object; a ``schema_version`` other than 1 is refused; each entry that
    is an object (``naive``, ``guarded``, ``predicted``, ...) must hold numbers or null in
    :data:`SUMMARY_FIGURES` when it has them. Other keys are shown as they are.
    """
    if not isinstance(doc, Mapping):
        raise ResultsError("summary", type(doc).__name__, "a JSON object", source=source)
    if "schema_version" in doc and doc["schema_version"] != 1:
        raise ResultsError("schema_version", doc["schema_version"], "1", source=source)
    for key, entry in doc.items():
        if not isinstance(entry, Mapping):
            continue
        for name in SUMMARY_FIGURES:
            value = entry.get(name)
            if value is not None and not _finite(value):
                raise ResultsError(f"{key}.{name}", value, "a finite number or null", source)
    return dict(doc)


def load_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a summary file (see :func:`check_summary`)."""
    name = os.fspath(path)
    return check_summary(read_json(name, "summary"), source=name)


def run_labels(docs: Sequence[Mapping[str, Any]], sources: Sequence[str | None]) -> list[str]:
    """One label per run: its scenario name; the file stem instead when two runs share a
    scenario name (naive.json and guarded.json of one scenario) or the name is empty; a
    ``#n`` suffix when labels still collide."""
    names = [str(d.get("scenario", {}).get("name") or "") for d in docs]
    labels = []
    for name, source in zip(names, sources, strict=True):
        stem = Path(source).stem if source else ""
        if (not name or names.count(name) > 1) and stem:
            labels.append(stem)
        else:
            labels.append(name or stem or "run")
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            out.append(f"{label} #{seen[label]}")
        else:
            out.append(label)
    return out
