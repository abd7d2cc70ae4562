"""The processes: the HTTP server of ``tidings serve`` and ``tidings api``, with its
connection bounds, and the scale-out processes beside the API, ``tidings worker`` and
``tidings scheduler``.

Each of the latter builds the same runtime as ``tidings serve``, starts only its own part
of it, and answers ``/healthz`` and ``/readyz`` on a port of its own, so an orchestrator
can tell a process that runs from one that can work. ``tidings serve --workers N`` is
the API in one process and N ``tidings worker`` processes beside it (``supervisor``).

Every process runs on uvloop where it is installed (``kit.loops``), reloads its catalog
on SIGHUP, and ``tidings serve`` (with its workers) also watches the folder.

``http`` serves the API (and ``serve --workers``), ``scale_out`` runs the worker and the
scheduler, ``health`` answers their health port, ``reloads`` takes a changed catalog,
and ``ports`` takes a port before anything serves on it.
"""
