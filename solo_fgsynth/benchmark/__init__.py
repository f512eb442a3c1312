"""``solo-fgsynth benchmark``: fgsynth against stock BYOL/SimCLR on equal budgets.

The runner (:mod:`~solo_fgsynth.benchmark.runner`) plans and runs the cells, each in its own
process (:mod:`~solo_fgsynth.benchmark.cell`); :mod:`~solo_fgsynth.benchmark.report` writes the
tables and figures, with the metrics of :mod:`solo_fgsynth.metrics`.
"""
