"""pytest configuration for the whole repository.

nbval collects the chapter notebooks from ``book/``, where
``tests/conftest.py`` does not apply, so the plugins are loaded here: the one
that times each notebook and checks it against its budget
(``tests/nbtimes.py``) and the one that compares a trained figure within the
numeric band its cell declares (``tests/nbtolerance.py``).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tests"))

pytest_plugins = ["nbtimes", "nbtolerance", "pytester"]

# nbval reads a kernel's output messages only after the cell has finished.
# Until then they queue in ZeroMQ, which drops messages beyond its high-water
# mark (about a thousand here): a cell that redraws a tqdm widget a few
# thousand times loses its last messages, and nbval fails it with "Timeout of
# 5 seconds exceeded waiting for output". Kernels inherit this environment;
# tqdm reads TQDM_MININTERVAL as the default minimum time between redraws
# (0.1 s otherwise), so a ten-minute cell redraws each bar at most 300 times.
# Jupyter front ends read the messages as they come and need no such limit.
os.environ.setdefault("TQDM_MININTERVAL", "2")
