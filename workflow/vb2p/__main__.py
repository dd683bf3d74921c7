from vb2p.cli import main

raise SystemExit(main())
