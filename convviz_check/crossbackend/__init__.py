"""Cross-backend agreement: one model on TensorFlow, PyTorch and JAX, one verdict.

Parent side (framework-free: NumPy and the standard library, never Keras), used by the
pytest process, the CLI and notebooks:

- :mod:`.pool`: one persistent child process per backend (:class:`~.pool.WorkerPool`),
  started lazily, restarted after a crash or a timeout, stopped at exit; backend
  availability (:func:`~.pool.parse_backends`, :func:`~.pool.require_backends`).
- :mod:`.agreement`: :func:`~.agreement.agreement` computes the artifacts on every
  backend through the pool and compares every backend pair into an
  :class:`~.agreement.AgreementReport` (its text lives in
  :mod:`convviz_check.report.agreement`).
- :mod:`.export`: the route for backends that cannot share one environment: each
  environment exports its artifacts, and :func:`~.export.compare_exported` compares
  them with the same report.

Child side (imports Keras and one framework):

- :mod:`.worker`: the process ``python -m convviz_check.crossbackend.worker --backend B``
  and its JSON-lines protocol.
- :mod:`.compute`: the computations it serves (also run in-process by
  :func:`~.export.export_current_backend`).

Models cross the process boundary as sources (path, preset directory,
``module:factory``), never pickled; results cross as
:class:`~convviz_check.artifacts.Artifact` files written with
:mod:`convviz_check.storage`.
"""
