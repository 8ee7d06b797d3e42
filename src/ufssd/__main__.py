"""``python -m ufssd``: the ``ufssd`` command line (:func:`ufssd.cli.main`)."""

from ufssd.cli import main

raise SystemExit(main())
