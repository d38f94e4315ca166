import os
import sys

import torch

# The unit tests import tests/helpers.py as a plain module; the package itself
# is imported from the installed seqbook_lib, never through sys.path.
sys.path.insert(0, os.path.dirname(__file__))

torch.set_default_dtype(torch.float64)
