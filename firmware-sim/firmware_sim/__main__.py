from firmware_sim.cli import main

raise SystemExit(main())
