from fmnist.sweep.cli import main

raise SystemExit(main())
