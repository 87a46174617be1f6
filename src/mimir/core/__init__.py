"""Mimir's leaf package: records, events and readings that several packages share.

Nothing here imports any other part of Mimir except :mod:`mimir.units` (byte formatting), so
every package may import ``mimir.core`` without creating a cycle (``tests/test_architecture.py``
checks it). What lives here:

- :mod:`mimir.core.events`: :class:`ModelEvent`, what the model manager did to a model;
- :mod:`mimir.core.records`: the frozen step and turn records of telemetry, and the one
  declaration of the step record's fields that JSON, CSV and the database derive from;
- :mod:`mimir.core.memory`: the one reader of this process's memory (RSS, high-water mark,
  system available, CUDA allocated) used by the manager, the telemetry probes and the web app;
- :mod:`mimir.core.gpu`: GPU facts through NVML;
- :mod:`mimir.core.hub_cache`: where the Hugging Face hub cache is and how a repo's folder is
  named in it.
"""
