"""``python -m dgm`` is the ``dgm`` command (also what ``torchrun -m dgm`` runs)."""

import sys

from dgm.cli.main import main

sys.exit(main())
