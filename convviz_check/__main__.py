"""``python -m convviz_check`` runs the ``convviz-check`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
