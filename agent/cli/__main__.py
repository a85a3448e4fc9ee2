"""`python -m agent.cli …` is `maint-agent …`."""

import sys

from agent.cli.main import main

sys.exit(main())
