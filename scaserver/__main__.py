"""``python -m scaserver``: the ``scaserver`` command."""

import sys

from scaserver.cli import main

sys.exit(main())
