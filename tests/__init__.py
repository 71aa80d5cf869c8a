"""elir-cli's test suite (a package, so that the tests import their helpers as ``tests.helpers``).

pytest imports each test module as ``tests.test_x`` and puts the repository
root on ``sys.path`` for them (its default ``prepend`` import mode goes up to
the first folder without an ``__init__.py``); a subprocess that needs a helper
gets the root in ``PYTHONPATH`` and runs ``python -m tests.helpers.x``.
"""
