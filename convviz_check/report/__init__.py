"""Everything a person reads: text, JSON, HTML and images.

- :mod:`~convviz_check.report.pictures`: previews, expected / obtained / diff images,
  input thumbnails;
- :mod:`~convviz_check.report.checks`: ``report.json`` and ``report.html`` of a run;
- :mod:`~convviz_check.report.comparison`: the text of a comparison;
- :mod:`~convviz_check.report.agreement`: the cross-backend agreement table.

NumPy, Pillow and matplotlib colormaps only: no Keras, no framework, no pytest.
"""
