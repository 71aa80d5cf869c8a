"""Reports for people: the HTML before/after page of a batch (``elir batch --report run.html``).

Layer 4. May import: elir_cli.pipeline, elir_cli.images.
"""
