"""Run the example workflows on a running ComfyUI, as a maintainer's check of the node pack.

ComfyUI is not on PyPI, so the test suite loads the pack the way ComfyUI does
without ComfyUI itself; this script is the check with the real thing:

    git clone https://github.com/comfyanonymous/ComfyUI && cd ComfyUI
    python -m pip install -r requirements.txt elir-cli
    elir comfyui install .           # then put elir_bfr/bsr/inpainting.safetensors in models/elir,
    cp models/elir/elir_bsr.safetensors models/upscale_models/   # and an example.png (and masked.png,
    python main.py --cpu &                                        # transparent where to inpaint) in input/
    python tools/comfyui_smoke.py --server http://127.0.0.1:8188

Each API-format workflow is posted to /prompt (ELIR Load Model pointed at
``elir_<task>.safetensors``) and its result read from /history; exit status 1
if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parent.parent / "elir_cli" / "integrations" / "comfyui" / "workflows"
INPUTS = {"elir_inpaint_face": "masked.png"}  # an image whose alpha marks the pixels to inpaint


def run(server: str, name: str, timeout: float) -> tuple[str, float, list, list]:
    prompt = json.loads((WORKFLOWS / f"{name}.api.json").read_text())
    for node in prompt.values():
        if node["class_type"] == "ElirLoadModel":
            node["inputs"]["weights"] = f"elir_{node['inputs']['task']}.safetensors"
        if node["class_type"] == "LoadImage" and name in INPUTS:
            node["inputs"]["image"] = INPUTS[name]
    request = urllib.request.Request(f"{server}/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    prompt_id = json.load(urllib.request.urlopen(request))["prompt_id"]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        history = json.load(urllib.request.urlopen(f"{server}/history/{prompt_id}"))
        if prompt_id in history:
            entry = history[prompt_id]
            images = [i["filename"] for out in entry["outputs"].values() for i in out.get("images", [])]
            errors = [m[1].get("exception_message") for m in entry["status"].get("messages", [])
                      if m[0] == "execution_error"]
            return entry["status"]["status_str"], time.monotonic() - start, images, errors
        time.sleep(1)
    return "timeout", timeout, [], []


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per workflow")
    args = parser.parse_args(argv)
    failed = 0
    for path in sorted(WORKFLOWS.glob("*.api.json")):
        name = path.name.removesuffix(".api.json")
        status, seconds, images, errors = run(args.server, name, args.timeout)
        print(f"{name}: {status} in {seconds:.1f} s, {images or errors}")
        failed += status != "success"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
