"""The ``crossentropy`` command.

``crossentropy fit``      fit maximum-likelihood classifiers with several losses, compare them
``crossentropy predict``  apply a saved model to a table
``crossentropy check``    every loss's analytic gradient against finite differences and PyTorch
``crossentropy bench``    run the benchmark scripts of a source checkout (``--quick``)

The user guide, with the saved-model format, is ``docs/cli.md``. Bad input
(a missing file, a column that is not there, a single class, non-numeric
features, a missing value, a label a model never saw, a damaged model file,
an unknown option) prints one line on stderr, naming the file and where it
can the row, column or label, and exits with status 2.

=================  ==============================================================
:mod:`.app`        the parser, error handling and dispatch: :func:`main`
:mod:`.common`     the program's name, :class:`UsageError`, the test-set metrics
:mod:`.data`       a table or a bundled dataset as features and labels (:class:`DataError`)
:mod:`.table`      reading CSV, TSV and Parquet with pyarrow; writing CSV
:mod:`.fit`        ``crossentropy fit``
:mod:`.predict`    ``crossentropy predict``
:mod:`.check`      ``crossentropy check``: the cases and their runner
:mod:`.bench`      ``crossentropy bench``
:mod:`.plots`      the figures ``fit`` writes
=================  ==============================================================
"""

from .app import main

__all__ = ["main"]
