"""The self-contained HTML report: ``brownout report`` and :func:`render_report`.

- :func:`render_report`: results documents (``brownout load``, ``brownout sim``, the demo),
  probe ledgers and the demo's summary.json -> one HTML page with inline CSS, a small inline
  script and inline SVG charts; it loads nothing from the network.
- :func:`load_ledger`, :func:`load_summary`: read and check those files (one
  :class:`~brownout.errors.ResultsError` line naming the file and the field when they are
  not valid); :func:`run_labels`: the label of each run (scenario name, or the file stem
  when runs share one).

The page's sections and what each chart shows are described in ``docs/report.md``. The
report reads documents only: it imports ``brownout.results`` and core modules, never a
runtime.
"""

from ._html import SECTIONS as SECTIONS
from ._html import render_report as render_report
from ._inputs import load_ledger as load_ledger
from ._inputs import load_summary as load_summary
from ._inputs import run_labels as run_labels

__all__ = ["SECTIONS", "load_ledger", "load_summary", "render_report", "run_labels"]
