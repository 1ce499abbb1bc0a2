"""``python -m mlops.serving``: the inference service's process (``server.main``)."""

import sys

from mlops.serving.server import main

sys.exit(main())
