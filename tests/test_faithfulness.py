"""Faithful faces: the per-face score, the guard and the colour fix, on real photos.

Plug-in restorers drift on purpose (shift the colour, put another person's
face in, more so at higher fidelity), so the right answer is known; a
faithful restorer (the identity) must be left alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from elir_cli import restore_array
from elir_cli.errors import UsageError
from elir_cli.faces.alignment import align_face
from elir_cli.pipeline.faithfulness import (ciede2000, color_fix, low_pass, mean_delta_e, measure, srgb_to_lab)
from tests.helpers.drifting import Calls, aligned, as_batch, face_swap
from tests.helpers.facephotos import load, shared_detector

PHOTO = "astronaut.png"
PHOTOS_DIR = Path(__file__).parent / "data" / "photos" / "faces"
OTHER = "grace_hopper.jpg"


def faithful(calls: Calls):
    def restore(x: torch.Tensor, fidelity: float = 1.0) -> torch.Tensor:
        calls.fidelities.append(fidelity)
        return x.clone()
    return restore


def colour_shift(x: torch.Tensor) -> torch.Tensor:
    """A restorer that keeps every detail but tints the face (+R, -B)."""
    return (x + torch.tensor([0.12, 0.0, -0.10]).view(1, 3, 1, 1)).clamp(0, 1)


# -- the measures ---------------------------------------------------------------------------------

# Sharma, Wu and Dalal (2005), Table 1: (L1, a1, b1), (L2, a2, b2), dE00.
SHARMA = [((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
          ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
          ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
          ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
          ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
          ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
          ((90.9257, -0.5406, -0.9208), (88.6381, -0.8985, -0.7239), 1.5381),
          ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082)]


@pytest.mark.parametrize("lab1, lab2, expected", SHARMA)
def test_ciede2000_matches_the_published_test_data(lab1, lab2, expected) -> None:
    assert float(ciede2000(np.array(lab1), np.array(lab2))) == pytest.approx(expected, abs=1e-4)


def test_lab_and_delta_e_agree_with_scikit_image() -> None:
    color = pytest.importorskip("skimage.color", reason="scikit-image (the test extra) gives the reference")
    rgb = low_pass(aligned(PHOTO))
    tinted = low_pass(colour_shift(as_batch(aligned(PHOTO)))[0].permute(1, 2, 0).numpy())
    assert np.abs(srgb_to_lab(rgb) - color.rgb2lab(rgb)).max() < 0.01
    ours = ciede2000(srgb_to_lab(rgb), srgb_to_lab(tinted))
    theirs = color.deltaE_ciede2000(color.rgb2lab(rgb), color.rgb2lab(tinted))
    assert np.abs(ours - theirs).max() < 0.02


def test_score_of_a_faithful_and_of_drifting_restorations() -> None:
    crop = aligned(PHOTO)
    same = measure("bfr", crop, crop)
    assert same.db == 80.0 and same.delta_e == 0.0
    tinted = measure("bfr", crop, colour_shift(as_batch(crop))[0].permute(1, 2, 0).numpy())
    swapped = measure("bfr", crop, aligned(OTHER))
    assert tinted.delta_e > 5 and swapped.db < 20 and tinted.db < 25
    # invented detail does not count against a blind task: high frequencies vanish at 64 x 64
    rng = np.random.default_rng(0)
    textured = np.clip(crop + rng.normal(0, 0.08, crop.shape).astype(np.float32), 0, 1)
    assert measure("bfr", crop, textured).db > 35  # noise std 0.08 averaged over 8 x 8 pixels: ~0.01


def test_consistency_scores_for_the_non_blind_tasks() -> None:
    """sr, denoising and inpainting use elir eval's consistency (the same function)."""
    from elir_cli.evaluation.consistency import consistency

    crop = aligned(PHOTO, 256)
    assert measure("denoising", crop, crop).db == round(consistency("denoising", crop, crop), 2)
    missing = np.zeros((256, 256), bool)
    missing[100:150] = True
    holed = np.where(missing[..., None], 0.0, crop).astype(np.float32)
    filled = measure("inpainting", holed, crop, mask=missing)
    assert filled.db == 80.0 and filled.delta_e == 0.0  # what the input kept is kept


# -- the colour fix -----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["wavelet", "adain"])
def test_colour_fix_brings_delta_e_down_on_a_tinted_face(method: str) -> None:
    crop = aligned(PHOTO)
    tinted = colour_shift(as_batch(crop))[0].permute(1, 2, 0).numpy()
    fixed = color_fix(tinted, crop, method)
    before, after = mean_delta_e(low_pass(crop), low_pass(tinted)), mean_delta_e(low_pass(crop), low_pass(fixed))
    assert before > 5 and after < before / 3


def test_wavelet_fix_keeps_the_restorations_detail() -> None:
    """New detail (high frequencies) survives the wavelet fix; only the colour comes from the input."""
    crop = aligned(PHOTO)
    rng = np.random.default_rng(1)
    detail = rng.normal(0, 0.05, crop.shape).astype(np.float32)
    restored = np.clip(crop + detail + np.array([0.1, 0.0, -0.08], np.float32), 0, 1)
    fixed = color_fix(restored, crop, "wavelet")
    kept = np.corrcoef((fixed - crop).ravel(), detail.ravel())[0, 1]
    assert kept > 0.8 and abs(float((fixed - crop).mean())) < 0.01


# -- the guard, through the pipeline -------------------------------------------------------------------------

def test_a_faithful_restorer_is_left_alone() -> None:
    calls = Calls()
    result = restore_array(load(PHOTO), restorer=faithful(calls), detector=shared_detector(), min_faithfulness=30,
                           fidelity=0.9)
    (face,) = result.faces
    assert face.fidelity == 0.9 and face.guard is None and face.faithfulness_db >= 30
    assert calls.fidelities == [1.0]  # restored once (the plug-in's own default), never again


def test_the_guard_lowers_fidelity_until_the_face_passes() -> None:
    calls = Calls()
    other = aligned(OTHER)
    minimum = 25.0
    result = restore_array(load(PHOTO), restorer=face_swap(other, calls), detector=shared_detector(),
                           min_faithfulness=minimum)
    (face,) = result.faces
    assert face.guard == "lowered" and 0 < face.fidelity < 1 and face.faithfulness_db >= minimum
    assert calls.fidelities[:2] == [1.0, 0.0] and len(calls.fidelities) == 2 + 4  # 0 first, then 4 halvings
    # the highest that passes, within the search's step: 1/16 more fails
    crop = align_face(load(PHOTO), face.matrix, 512)
    above = face_swap(other, Calls())(as_batch(crop), fidelity=face.fidelity + 1 / 16)[0].permute(1, 2, 0).numpy()
    assert measure("bfr", crop, above).db < minimum
    plain = restore_array(load(PHOTO), restorer=face_swap(other, Calls()), detector=shared_detector())
    assert plain.faces[0].faithfulness_db < minimum and plain.faces[0].fidelity == 1.0  # the guard did it


def test_a_face_that_fails_even_at_zero_is_kept_at_zero_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    calls = Calls()
    with caplog.at_level(logging.WARNING, logger="elir_cli"):
        result = restore_array(load(PHOTO), restorer=face_swap(aligned(OTHER), calls, floor=0.8),
                               detector=shared_detector(), min_faithfulness=30)
    (face,) = result.faces
    assert face.guard == "failed" and face.fidelity == 0.0 and face.faithfulness_db < 30
    assert "face 0 stays below 30 dB even at fidelity 0" in caplog.text


def test_the_colour_fix_runs_before_the_score() -> None:
    tinted = restore_array(load(PHOTO), restorer=colour_shift, detector=shared_detector())
    fixed = restore_array(load(PHOTO), restorer=colour_shift, detector=shared_detector(), color_fix="wavelet")
    assert fixed.faces[0].delta_e < tinted.faces[0].delta_e / 3
    assert fixed.faces[0].faithfulness_db > tinted.faces[0].faithfulness_db


def test_a_restorer_without_fidelity_cannot_be_guarded() -> None:
    with pytest.raises(UsageError, match="min_faithfulness.*takes no fidelity"):
        restore_array(load(PHOTO), restorer=colour_shift, detector=shared_detector(), min_faithfulness=30)


@pytest.mark.parametrize("options, match", [
    ({"task": "inpainting", "color_fix": "wavelet"}, "inpainting's missing pixels have none"),
    ({"task": "bsr", "min_faithfulness": 20}, "min_faithfulness guards faces; bsr restores whole images"),
    ({"min_faithfulness": -1}, "min_faithfulness"),
    ({"color_fix": "sepia"}, "color_fix"),
])
def test_settings_refuse_what_cannot_work(options: dict, match: str) -> None:
    from elir_cli import RestoreSettings

    with pytest.raises(UsageError, match=match):
        RestoreSettings(**options)


# -- the model's own search: the same flow, stopped earlier -------------------------------------------------------

def test_model_restorer_again_is_a_fresh_run_at_that_fidelity() -> None:
    from elir_cli.pipeline.photo import model_restorer
    from tests.helpers.tiny import tiny_model

    model = tiny_model()
    crops = torch.from_numpy(np.stack([aligned(PHOTO, 64), aligned(OTHER, 64)])).permute(0, 3, 1, 2)
    restorer = model_restorer(model, seed=5)
    restorer(crops)
    again = restorer.again(crops[1:2], 0.4, 1)  # the second crop's noise, in a batch of one
    fresh = model_restorer(model, seed=5, fidelity=0.4)(crops)[1:2]
    assert (again - fresh).abs().max() < 1e-5  # kernels may differ by batch size in the last bits
    single = model_restorer(model, seed=5)
    single(crops[:1])
    assert torch.equal(single.again(crops[:1], 0.4, 0), model_restorer(model, seed=5, fidelity=0.4)(crops[:1]))
    other_noise = model_restorer(model, seed=6, fidelity=0.4)(crops[:1])
    assert (other_noise - single.again(crops[:1], 0.4, 0)).abs().max() > 1e-3


def test_whole_image_work_is_scored_and_colour_fixed() -> None:
    photo = load("camera.png")[:64, :96]

    def tint(x: torch.Tensor) -> torch.Tensor:
        return (x + 0.1).clamp(0, 1)

    def keep(x: torch.Tensor) -> torch.Tensor:
        return x

    faithful = restore_array(photo, task="bsr", restorer=keep)  # x4: bicubic in the tiler, nothing invented
    assert faithful.array.shape[:2] == (256, 384) and faithful.faithfulness.db > 35
    plain = restore_array(photo, task="bsr", restorer=tint, upscale=1)
    fixed = restore_array(photo, task="bsr", restorer=tint, upscale=1, color_fix="adain")
    assert plain.faithfulness is not None and fixed.faithfulness is not None
    assert fixed.faithfulness.delta_e < plain.faithfulness.delta_e


def test_elir_restore_says_what_the_guard_did(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The real CLI: the per-file line counts the faces the guard lowered or could not save."""
    from tests.helpers.cli_helpers import run_elir, tiny_weights

    weights = tiny_weights(tmp_path, "denoising")
    photo = str(PHOTOS_DIR / OTHER)
    done = run_elir("restore", photo, "--task", "denoising", "--weights", str(weights), "--steps", "1",
                    "--min-faithfulness", "60", "-o", str(tmp_path / "out.png"))
    assert done.returncode == 0, done.stderr
    assert "1 face (0 lowered by the guard, 1 below the minimum even at fidelity 0)" in done.stderr.decode()
    plain = run_elir("restore", photo, "--task", "denoising", "--weights", str(weights), "--steps", "1",
                     "-o", str(tmp_path / "plain.png"))
    assert plain.returncode == 0 and "guard" not in plain.stderr.decode()
