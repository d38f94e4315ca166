"""seqbook_lib: the code of the seqbook course text, written once.

One concept per module:

- :mod:`seqbook_lib.utils` -- seeding and device selection.
"""

__version__ = "0.1.0"
