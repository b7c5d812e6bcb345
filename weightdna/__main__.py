from weightdna.cli import main

raise SystemExit(main())
