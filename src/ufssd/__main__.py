from ufssd.cli import main

raise SystemExit(main())
