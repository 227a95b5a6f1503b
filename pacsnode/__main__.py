"""``python -m pacsnode`` runs the CLI."""

from pacsnode.cli.main import main

raise SystemExit(main())
