"""Everything a person reads: text, JSON, HTML and images.

- :mod:`~convviz_check.report.checks`: golden checks (previews, expected / obtained /
  diff images, ``report.json`` and ``report.html`` of a pytest run);
- :mod:`~convviz_check.report.agreement`: the cross-backend agreement table.

NumPy, Pillow and matplotlib colormaps only: no Keras, no framework, no pytest.
"""

from .checks import preview

__all__ = ["preview"]
