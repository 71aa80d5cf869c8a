"""Measuring restorations: the paper's degradations, its metrics and protocol, and faithfulness.

Owns :mod:`.degrade` (the paper's synthetic degradations, deterministic per
file, with a manifest), :mod:`.images` (listing, pairing and resizing the
image folders an evaluation reads), :mod:`.metrics` (pyiqa's ``create_metric``
as the metric factory, PSNR and SSIM built in with pyiqa's definitions,
one-line errors for missing weights), :mod:`.consistency` (re-degrade the
restored image and compare with the input: no ground truth needed),
:mod:`.identity` (the ArcFace angle, IDS), :mod:`.evaluate` (restore,
measure, compare with the paper), :mod:`.sweep` (the perception-distortion curve) and
:mod:`.report` (JSON, Markdown and HTML outputs).

Layer 4. May import: elir_cli.pipeline, elir_cli.faces, elir_cli.images, elir_cli.registry, elir_cli.model.
"""
