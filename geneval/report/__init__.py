"""The report wing: what a finished run shows, and the verdicts drawn from it.

It reads the run's report (a plain mapping, docs/contracts.md §5) and the :class:`Visuals`
the run kept for it; the pipeline's inner steps (sources, inputs, passes, collect) never
import it.

- :mod:`geneval.report.formats`: JSON, the terminal table, Markdown and JUnit XML.
- :mod:`geneval.report.html`: the self-contained HTML page (``--html``).
- :mod:`geneval.report.files`: the report files of ``geneval run``, planned before the run.
- :mod:`geneval.report.visuals`: the :class:`~geneval.report.visuals.Visuals` data (grids, the
  neighbour panel), planned and collected alongside the run.
- :mod:`geneval.report.grids`: image grids as PNG.
- :mod:`geneval.report.curves`: curve fields of metric results, drawn as inline SVG.
- :mod:`geneval.report.neighbours`: nearest reference images of samples (memorisation check).
- :mod:`geneval.report.explain`: what each number means, sample-count warnings, versions.
- :mod:`geneval.report.gates`: quality gates (``--fail-if``, ``--gates``, ``pyproject.toml``).
- :mod:`geneval.report.compare`: ``geneval compare``, reports side by side.

Each name is imported from its module; this package imports none of them, so that loading
one (the gates, for the command line) does not load torch through another (the HTML page).
"""
