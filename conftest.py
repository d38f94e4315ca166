"""pytest configuration for the whole repository.

nbval collects the chapter notebooks from ``book/``, where
``tests/conftest.py`` does not apply, so the plugin that times each notebook
and checks it against its budget (``tests/nbtimes.py``) is loaded here.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tests"))

pytest_plugins = ["nbtimes", "pytester"]
