"""``python -m dvcl ...`` runs the ``dvcl`` command line (for environments where the script is not on PATH)."""

from dvcl.cli.main import main

raise SystemExit(main())
