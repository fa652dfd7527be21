"""Server room: the tile server, ``sarvessel serve`` (FastAPI + uvicorn, the ``serve`` extra),
on the board or on the ground.

Follow one request: :mod:`.app` builds the app from :mod:`.settings` (one validated class);
:mod:`.routers` are thin and take what they need through :mod:`.deps`; bodies are checked by
:mod:`.models` (pydantic) and :mod:`.inputs` (scene paths under the data roots, uploads, tile
arrays); scene jobs are stored by :mod:`.jobs` (SQLite, WAL, one writer) and run by
:mod:`.runner`, which calls :func:`sarvessel.runtime.detect.detect_scene`, so a job writes what
``sarvessel detect`` writes and resumes from the same journal. :mod:`.errors` carries the status
codes that :func:`.app.install_error_handlers` maps in one place; :mod:`.metrics` is the
Prometheus side. :mod:`.client` and :mod:`.cli` (``serve``, ``submit``, ``results``) need no web
framework. See ``docs/server.md``.

Only this room imports FastAPI, and only :mod:`.app`, :mod:`.deps`, :mod:`.models`,
:mod:`.metrics` and :mod:`.routers` do; importing this package imports none of them.
"""
