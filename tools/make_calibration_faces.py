"""Make the calibration faces shipped in ``elir_cli/pipeline/calibration_faces/``.

The bundled example photos' degraded versions (``examples/*_degraded.jpg``),
each face detected and aligned to the FFHQ template at 512 x 512 with our own
faces layer, saved as JPEG (quality 92). ``elir_cli.pipeline.calibration``
resizes them to each task's size. Run from a checkout:

    python tools/make_calibration_faces.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from elir_cli.faces.alignment import align_face, alignment_matrix  # noqa: E402
from elir_cli.faces.detection import FaceDetector  # noqa: E402

SIZE = 512
QUALITY = 92
PHOTOS = ("astronaut_degraded.jpg", "grace_hopper_degraded.jpg", "camera_degraded.jpg")


def main() -> None:
    out = ROOT / "elir_cli" / "pipeline" / "calibration_faces"
    out.mkdir(exist_ok=True)
    detector = FaceDetector()
    for name in PHOTOS:
        rgb = np.asarray(Image.open(ROOT / "examples" / name).convert("RGB"), dtype=np.float32) / 255.0
        faces = detector.detect(rgb)
        if not faces:
            raise SystemExit(f"no face found in {name}")
        face = max(faces, key=lambda f: f.area)
        crop = align_face(rgb, alignment_matrix(face.landmarks, SIZE), SIZE)
        target = out / f"{Path(name).stem}_aligned.jpg"
        Image.fromarray((crop * 255 + 0.5).astype(np.uint8)).save(target, quality=QUALITY)
        print(target)


if __name__ == "__main__":
    main()
