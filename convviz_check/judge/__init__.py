"""Judgments: pure NumPy functions that decide whether a result holds and return an
:class:`~convviz_check.types.Outcome` (the record the report is made of).

No Keras, no framework, no pytest: the CLI, the pytest process and the parent of a
cross-backend run judge without importing either.
"""
