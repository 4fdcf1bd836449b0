"""Prometheus metrics of one appliance (``GET /metrics``, api/metrics.py).

One ``CollectorRegistry`` per appliance, built in conductor/appliance.py, no
module-level state. Two kinds of source:

- counts of rows (nodes, patch hosts, patches, the orchestration strategy) are
  custom collectors: one grouped query per family at scrape time, so they are
  right whichever conductor changed the rows (``nodes.py``, ``patching.py``,
  ``orchestration.py``);
- events are recorded where they happen, by recorders the appliance gives to the
  objects that see them: provision durations (the store's state-change hook,
  ``provisioning.py``), power sync, BMC errors, heartbeats and callback timeouts
  (``events.py``), boot transfers (``boot.py``; TFTP transfers end in worker
  processes, which already report each end to the server thread: counted there).

``exporter.py`` puts them together and renders the text format.
"""
