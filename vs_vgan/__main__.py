"""``python -m vs_vgan``: the vs-vgan command."""
import sys

from .cli import main

sys.exit(main())
