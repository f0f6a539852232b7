from clipsvd.cli import main

raise SystemExit(main())
