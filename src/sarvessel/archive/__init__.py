"""Archive reprocessing: many scenes through a Dask cluster, resumable, one report. Runs on the
ground (a laptop, an HPC allocation, a Kubernetes cluster), never on the board.

``sarvessel detect-many`` (:mod:`~sarvessel.archive.cli`) follows one scene like this:

- :mod:`~sarvessel.archive.scenes`: the command's scene arguments (folders, globs, list files)
  become scene paths, scanned once on the client (id, size, what identifies the job);
- :mod:`~sarvessel.archive.cluster`: a ``LocalCluster`` sized to the machine, or a client of an
  existing scheduler, and the onnxruntime threads each task may use;
- :mod:`~sarvessel.archive.task`: what one Dask task does on a worker: take the scene's lock,
  skip it if its outputs are complete, else call
  :func:`sarvessel.runtime.detect.detect_scene` (which writes the outputs and the journal
  itself) and return a small :class:`~sarvessel.archive.task.SceneOutcome`;
- :mod:`~sarvessel.archive.run`: submits the tasks, follows them (``as_completed``), and writes
  the combined submission CSV and the archive summary; optionally scores the archive.

Imports numpy, dask.distributed (only where a cluster is used, so ``sarvessel --help`` works
without it), :mod:`sarvessel.runtime` and :mod:`sarvessel.evaluation`; nothing from model,
quantize or hw.
"""
