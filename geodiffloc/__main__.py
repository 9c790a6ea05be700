from geodiffloc.cli.main import main

raise SystemExit(main())
