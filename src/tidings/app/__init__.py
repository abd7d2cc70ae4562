"""The composition root: builds every backend from settings and mounts the routers.

``runtime`` is the set of long-lived objects of one process, ``wiring`` builds it from
the settings, ``asgi`` makes the HTTP application around it, and ``health`` answers
``/healthz``, ``/readyz`` and ``/metrics`` for every process.
"""
