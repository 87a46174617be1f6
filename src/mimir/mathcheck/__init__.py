"""The math engine: sympy checks the tutor's math and the student's answers.

- :mod:`~mimir.mathcheck.parse`: text, ``^``/``**``, implicit multiplication and LaTeX to
  sympy, through a whitelist (student text is data, never code);
- :mod:`~mimir.mathcheck.problems`: recognise a problem, solve it, the hint ladder;
- :mod:`~mimir.mathcheck.answers`: a reply against an answer key, by equivalence;
- :mod:`~mimir.mathcheck.practice`: practice questions with answer keys from templates;
- :mod:`~mimir.mathcheck.claims`: the equalities a reply states, checked and corrected;
- :mod:`~mimir.mathcheck.engine`: the JSON-in, JSON-out calls the worker serves;
- :mod:`~mimir.mathcheck.worker`: the worker process (time limit, memory cap, restart);
- :mod:`~mimir.mathcheck.spans`: math inside prose, without sympy.

Only ``worker`` and ``spans`` are imported by the server process; everything that imports
sympy runs in the worker. See ``docs/math.md``.
"""

from mimir.mathcheck.worker import CouldNotCheck, MathWorker

__all__ = ["CouldNotCheck", "MathWorker"]
