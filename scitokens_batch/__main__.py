"""``python -m scitokens_batch`` is the ``scitokens-batch`` command."""

from .cli import main

raise SystemExit(main())
