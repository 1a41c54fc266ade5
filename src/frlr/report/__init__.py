"""Tables, figures and reports over training records.

The framework-neutral pieces that the loss libraries also use live outside this package:
:mod:`frlr.ncd` (NCD records, verdict, Fig. 2) and :mod:`frlr.style` (one colour per loss), so
``frlr.torch`` and ``frlr.keras`` never import the toolkit.
"""
