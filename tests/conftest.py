import os
import sys

import torch

# The unit tests import tests/helpers.py as a plain module; the package itself
# is imported from the installed seqbook_lib, never through sys.path.
sys.path.insert(0, os.path.dirname(__file__))

# Comparisons with torch run in double precision, where two correct
# implementations agree to ~1e-12 and a wrong gate shows up as an O(1) error.
torch.set_default_dtype(torch.float64)
# The tests use small tensors: one thread avoids thread hand-off overhead and
# keeps their speed steady when the machine is busy.
torch.set_num_threads(1)
