"""Consistency: how well the restored image agrees with its own input (no ground truth needed).

Defined once, in :mod:`elir_cli.pipeline.faithfulness`, where every restored
face is scored with it (sr, denoising, inpainting); ``elir eval`` reports the
same measure over a folder. The blind tasks (bfr, bsr) have no known
degradation and get no consistency score.
"""

from __future__ import annotations

from elir_cli.pipeline.faithfulness import PSNR_EPS, consistency, psnr, redegrade

__all__ = ["PSNR_EPS", "consistency", "psnr", "redegrade"]
