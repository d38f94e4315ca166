"""pytest configuration for the whole repository.

nbval collects the chapter notebooks from ``book/``, where
``tests/conftest.py`` does not apply, so the plugin that times each notebook
and checks it against its budget (``tests/nbtimes.py``) is loaded here.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tests"))

pytest_plugins = ["nbtimes", "pytester"]

# nbval reads a kernel's output messages only after the cell has finished.
# Until then they queue in ZeroMQ, which drops messages beyond its high-water
# mark (about a thousand here): a cell that redraws a tqdm widget a few
# thousand times loses its last messages, and nbval fails it with "Timeout of
# 5 seconds exceeded waiting for output". Kernels inherit this environment;
# tqdm reads TQDM_MININTERVAL as the default minimum time between redraws
# (0.1 s otherwise), so a ten-minute cell redraws each bar at most 300 times.
# Jupyter front ends read the messages as they come and need no such limit.
os.environ.setdefault("TQDM_MININTERVAL", "2")
