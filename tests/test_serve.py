"""`elir serve`: the API through FastAPI's test client and a real uvicorn, and the web page in Chromium.

One tiny random model (task denoising, --steps 1) serves every test. Most
images are small noise pictures in which the detector finds no face, or are
sent with ``faces=99`` (a face number no photo has), so that the model cost
stays out of the test time; a real face photo is restored where the point is
the model's work (the browser test, which checks that one face was found).
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("multipart", reason="the serve extra (python-multipart) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, check_png, chromium_or_skip, \
    chromium_page, save_png, screens_dir  # noqa: E402
from tests.helpers.cli_helpers import ELIR, assert_one_line_error, run_elir, tiny_denoising  # noqa: E402,F401 (fixture)
from tests.helpers.serve_helpers import NO_FACE, PHOTOS, Server, multipart, png_bytes, post_image, request, rss_bytes  # noqa: E402
from tests.helpers.waiting import ManualClock, wait_until  # noqa: E402

from elir_cli.serve.app import create_app  # noqa: E402
from elir_cli.serve.config import ServeConfig, exposure_warning  # noqa: E402

FAST = {"steps": "1", "seed": "3"}


def config(weights: Path, **changes) -> ServeConfig:  # type: ignore[no-untyped-def]
    return ServeConfig(**{"task": "denoising", "weights": str(weights), "device": "cpu", "queue": 2, **changes})


@pytest.fixture(scope="module")
def client(tiny_denoising: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    jobs = tmp_path_factory.mktemp("jobs")
    with TestClient(create_app(config(tiny_denoising, jobs_dir=jobs, max_upload_mb=0.25, queue=1))) as c:
        yield c
    assert not list(jobs.iterdir()), "job results left behind after shutdown"


def service(client: TestClient):  # type: ignore[no-untyped-def]
    return client.app.state.service  # type: ignore[attr-defined]


def upload(data: bytes, name: str = "photo.png") -> dict:
    return {"image": (name, data, "application/octet-stream")}


# -------------------------------------------------------------------- /v1/restore


def test_restore_answers_the_image_with_faces_and_timings(client: TestClient) -> None:
    source = png_bytes((48, 40))
    r = client.post("/v1/restore", files=upload(source), data=FAST)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"  # auto keeps PNG for a PNG input, as the CLI
    out = Image.open(io.BytesIO(r.content))
    assert out.size == (48, 40)
    assert r.headers["x-elir-faces"] == "0" and json.loads(r.headers["x-elir-face-boxes"]) == []
    timing = dict(part.split(";dur=") for part in r.headers["server-timing"].split(", "))
    assert set(timing) == {"queue", "decode", "restore", "encode"}
    assert float(r.headers["x-elir-seconds"]) >= 0


def test_restore_writes_the_format_asked_for(client: TestClient) -> None:
    r = client.post("/v1/restore", files=upload(png_bytes((40, 40), seed=7)), data={**FAST, "ext": "webp"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(r.content)).format == "WEBP"


@pytest.mark.parametrize("how", ["accept", "query"])
def test_restore_json_variant_carries_the_same_bytes_in_base64(client: TestClient, how: str) -> None:
    source = png_bytes((40, 32), seed=1)
    image = client.post("/v1/restore", files=upload(source), data=FAST)
    kwargs = {"headers": {"Accept": "application/json"}} if how == "accept" else {"params": {"format": "json"}}
    r = client.post("/v1/restore", files=upload(source), data=FAST, **kwargs)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert base64.b64decode(body["image"]) == image.content  # same seed, same bytes
    assert body["faces"] == 0 and body["size"] == [40, 32] and body["media_type"] == "image/png"
    assert set(body["timings"]) == {"queue", "decode", "restore", "encode"}


def test_each_face_is_scored_in_the_json_and_the_headers(client: TestClient) -> None:
    """A real face: its faithfulness record in the JSON answer and in X-Elir-Face-Scores, guarded as asked."""
    photo = (Path(__file__).parent / "data" / "photos" / "faces" / "grace_hopper.jpg").read_bytes()
    fields = {**FAST, "min_faithfulness": "60", "color_fix": "wavelet"}
    r = client.post("/v1/restore", files=upload(photo, "hopper.jpg"), data=fields, params={"format": "json"})
    assert r.status_code == 200, r.text
    (score,) = r.json()["face_scores"]
    assert set(score) == {"index", "faithfulness_db", "delta_e", "fidelity", "identity", "guard"}
    assert score["guard"] in ("lowered", "failed") and score["fidelity"] < 1.0  # 60 dB: the tiny model cannot
    image = client.post("/v1/restore", files=upload(photo, "hopper.jpg"), data=fields)
    assert json.loads(image.headers["x-elir-face-scores"]) == [score]  # same seed, same record


@pytest.mark.parametrize("fields, field", [
    ({"steps": "0"}, "steps"),
    ({"steps": "abc"}, "steps"),
    ({"fidelity": "1.5"}, "fidelity"),
    ({"quality": "0"}, "quality"),
    ({"upscale": "17"}, "upscale"),
    ({"det_threshold": "1.0"}, "det_threshold"),  # the CLI's rule (RestoreSettings): 0 < t < 1
    ({"faces": "a,b"}, "faces"),                   # the CLI's parse_face_indices
    ({"faces": "-1"}, "faces"),
    ({"aligned": "true", "faces": "0"}, "aligned"),  # --aligned skips detection: the CLI refuses the pair
    ({"task": "bfr"}, "task"),                     # this server has --weights for denoising only
    ({"task": "nosuch"}, "task"),
    ({"ext": "gif"}, "ext"),
    ({"min_faithfulness": "-1"}, "min_faithfulness"),
    ({"color_fix": "sepia"}, "color_fix"),
])
def test_bad_options_are_422_naming_the_field(client: TestClient, fields: dict, field: str) -> None:
    r = client.post("/v1/restore", files=upload(png_bytes()), data=fields)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == field and body["error"]


@pytest.mark.parametrize("files, field", [
    (None, "image"),                           # no image at all
    (upload(b""), "image"),                    # an empty file
    (upload(b"hello, not an image"), "image"),
    (upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "image"),  # a PNG signature, then nothing
    (upload(b"\0\0\0\x18ftypmp42" + b"\0" * 40), "image"),  # an MP4 video: not yet
])
def test_bad_uploads_are_422(client: TestClient, files, field: str) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/restore", files=files, data=FAST)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_a_video_is_refused_for_now_but_avif_photos_are_not(client: TestClient) -> None:
    r = client.post("/v1/jobs", files=upload(b"\0\0\0\x18ftypisom" + b"\0" * 64, "clip.mp4"), data=FAST)
    assert r.status_code == 422 and "video" in r.json()["error"]
    avif = (PHOTOS / "awkward" / "hopper.avif").read_bytes()
    assert avif[4:8] == b"ftyp"  # the same container as MP4
    r = client.post("/v1/restore", files=upload(avif, "hopper.avif"), data={**FAST, "faces": NO_FACE})
    assert r.status_code == 200, r.text


def test_awkward_files_get_an_image_or_a_4xx_json_and_the_server_keeps_serving(client: TestClient) -> None:
    bad = {"truncated.jpg", "corrupt-header.jpg", "decompression_bomb.gif", "truncated_jpeg.jpg",
           "65536-uint32-limit.png", "hopper_12bit.jpg"}
    seen = Counter()
    for path in sorted((PHOTOS / "awkward").iterdir()):
        r = client.post("/v1/restore", files=upload(path.read_bytes(), path.name), data={**FAST, "faces": NO_FACE})
        seen[r.status_code] += 1
        assert r.status_code in (200, 413, 422), (path.name, r.status_code, r.text)
        if r.status_code != 200:
            assert r.headers["content-type"] == "application/json" and r.json()["error"], path.name
        if path.name in bad:
            assert r.status_code in (413, 422), path.name
    assert seen[200] >= 15 and seen[422] >= 3, seen
    assert client.post("/v1/restore", files=upload(png_bytes()), data=FAST).status_code == 200


def test_pixel_limit_is_the_bomb_guard(tiny_denoising: Path, tmp_path: Path) -> None:
    with TestClient(create_app(config(tiny_denoising, jobs_dir=tmp_path, max_pixels=1000))) as c:
        r = c.post("/v1/restore", files=upload(png_bytes((40, 30))), data=FAST)  # 1200 pixels
        assert r.status_code == 422 and "megapixels" in r.json()["error"] and r.json()["field"] == "image"
        r = c.post("/v1/restore", files=upload(png_bytes((30, 30))), data={**FAST, "upscale": "2"})  # 3600 out
        assert r.status_code == 422 and "output" in r.json()["error"]
        assert c.post("/v1/restore", files=upload(png_bytes((30, 30))), data=FAST).status_code == 200


def test_upload_over_the_limit_is_413(client: TestClient) -> None:
    big = b"\xff" * (300 * 1024)  # the fixture's limit is 0.25 MiB
    r = client.post("/v1/restore", files=upload(big), data=FAST)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = client.post("/v1/jobs", files=upload(big), data=FAST)
    assert r.status_code == 413
    assert client.get("/healthz").status_code == 200


def test_full_queue_is_429_with_retry_after(client: TestClient) -> None:
    """Hold the worker on a stage callback, fill the one-slot queue, and the next request is turned away."""
    worker = service(client).worker
    gate, running = threading.Event(), threading.Event()
    settings = service(client).default_settings()

    def hold(stage: str, progress: float) -> None:
        running.set()
        gate.wait(30)

    held = worker.submit(settings, png_bytes(), on_stage=hold)
    assert running.wait(30)
    queued = worker.submit(settings, png_bytes())
    try:
        r = client.post("/v1/restore", files=upload(png_bytes()), data=FAST)
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"]
        r = client.post("/v1/jobs", files=upload(png_bytes()), data=FAST)
        assert r.status_code == 429
    finally:
        gate.set()
    held.result(60), queued.result(60)
    assert client.post("/v1/restore", files=upload(png_bytes()), data=FAST).status_code == 200


def test_time_limit_answers_503_and_frees_the_queue(tiny_denoising: Path, tmp_path: Path) -> None:
    with TestClient(create_app(config(tiny_denoising, jobs_dir=tmp_path, timeout=0.05))) as c:
        worker = c.app.state.service.worker  # type: ignore[attr-defined]
        gate = threading.Event()
        held = worker.submit(c.app.state.service.default_settings(), png_bytes(),  # type: ignore[attr-defined]
                             on_stage=lambda stage, progress: gate.wait(30))
        r = c.post("/v1/restore", files=upload(png_bytes()), data=FAST)
        gate.set()
        held.result(60)
        assert r.status_code == 503 and "limit" in r.json()["error"] and "retry-after" in r.headers
        assert worker.waiting == 0  # the timed-out request was taken off the queue


# -------------------------------------------------------------------- /v1/jobs


def wait_job(c: TestClient, job_id: str, timeout: float = 120) -> dict:
    def finished() -> dict | None:
        job = c.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] not in ("queued", "running") else None

    return wait_until(finished, timeout, f"job {job_id} finished")


def test_job_lifecycle(client: TestClient) -> None:
    r = client.post("/v1/jobs", files=upload(png_bytes((32, 32), seed=4), "../../etc/passwd"), data=FAST)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" and job["status"] in ("queued", "running")
    done = wait_job(client, job["id"])
    assert done["status"] == "done" and done["progress"] == 1 and done["result"]["size"] == [32, 32]
    assert done["expires"] > done["finished"]
    store = service(client).jobs
    files = list(store.root.iterdir())
    assert [f.name for f in files] == [job["id"] + ".png"]  # named by the job id, never by the client
    result = client.get(done["result_url"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(result.content)).size == (32, 32)
    assert client.delete(f"/v1/jobs/{job['id']}").json() == {"id": job["id"], "status": "deleted"}
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/result").status_code == 404
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 404
    assert not list(store.root.iterdir())


def test_unknown_job_is_404_and_an_unfinished_one_409(client: TestClient) -> None:
    assert client.get("/v1/jobs/nosuchjob").status_code == 404
    assert client.get("/v1/jobs/nosuchjob").json()["error"]
    worker = service(client).worker
    gate = threading.Event()
    held = worker.submit(service(client).default_settings(), png_bytes(), on_stage=lambda s, p: gate.wait(30))
    try:
        job = client.post("/v1/jobs", files=upload(png_bytes()), data=FAST).json()
        r = client.get(f"/v1/jobs/{job['id']}/result")
        assert r.status_code == 409 and "queued" in r.json()["error"]
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200  # cancelled while queued
    finally:
        gate.set()
    held.result(60)
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_failed_job_reports_its_one_line_reason(client: TestClient) -> None:
    job = client.post("/v1/jobs", files=upload((PHOTOS / "awkward" / "truncated.jpg").read_bytes()),
                      data=FAST).json()
    done = wait_job(client, job["id"])
    assert done["status"] == "failed" and "truncated" in done["error"] and "\n" not in done["error"]
    r = client.get(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 409 and "failed" in r.json()["error"]
    client.delete(f"/v1/jobs/{job['id']}")


def test_results_expire_and_the_disk_budget_drops_the_oldest(tiny_denoising: Path, tmp_path: Path) -> None:
    budget_mb = 1.5 * len(png_bytes((64, 64))) / (1 << 20)  # room for one result, not two
    with TestClient(create_app(config(tiny_denoising, jobs_dir=tmp_path, job_ttl=1.0, jobs_disk_mb=budget_mb))) as c:
        clock = service(c).jobs.clock = ManualClock()  # results expire when the test says time has passed
        first = c.post("/v1/jobs", files=upload(png_bytes((64, 64), seed=5)), data=FAST).json()["id"]
        assert wait_job(c, first)["status"] == "done"
        second = c.post("/v1/jobs", files=upload(png_bytes((64, 64), seed=6)), data=FAST).json()["id"]
        assert wait_job(c, second)["status"] == "done"
        assert c.get(f"/v1/jobs/{first}").json()["status"] == "expired"  # dropped for room
        assert c.get(f"/v1/jobs/{first}/result").status_code == 409
        assert [p.name for p in tmp_path.iterdir()] == [f"{second}.png"]
        clock.advance(1.3)
        assert c.get(f"/v1/jobs/{second}").status_code == 404  # expired after --job-ttl
        assert not list(tmp_path.iterdir())


# -------------------------------------------------------------------- keys, models, docs, page


def test_api_key_is_required_on_every_v1_route(tiny_denoising: Path, tmp_path: Path) -> None:
    with TestClient(create_app(config(tiny_denoising, jobs_dir=tmp_path, api_key="s3cret"))) as c:
        for method, path in [("GET", "/v1/models"), ("POST", "/v1/restore"), ("POST", "/v1/jobs"),
                             ("GET", "/v1/jobs/x"), ("GET", "/v1/jobs/x/result"), ("DELETE", "/v1/jobs/x")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret2"}):
                r = c.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        r = c.post("/v1/restore", headers={"X-API-Key": "s3cret"}, files=upload(png_bytes()), data=FAST)
        assert r.status_code == 200
        assert c.get("/healthz").json()["api_key_required"] is True
        assert c.get("/").status_code == 200  # the page itself is open; it asks for the key


def test_models_is_what_models_list_json_says(client: TestClient) -> None:
    listed = json.loads(run_elir("models", "list", "--json").stdout)
    served = client.get("/v1/models").json()
    assert [{k: v for k, v in m.items() if k != "served"} for m in served] == listed
    assert [m["task"] for m in served if m["served"]] == ["denoising"]


def test_healthz_docs_openapi_and_page(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["tasks"] == ["denoising"] and health["queue_size"] == 1
    schema = client.get("/openapi.json").json()
    assert {"/v1/restore", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/models",
            "/healthz"} <= set(schema["paths"])
    form = schema["components"]["schemas"]
    assert any("fidelity" in s.get("properties", {}) for s in form.values())
    assert "swagger" in client.get("/docs").text.lower()
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for asset in ("/static/app.js", "/static/app.css"):
        r = client.get(asset)
        assert r.status_code == 200 and "http://" not in r.text and "https://" not in r.text
    assert client.get("/nothing-here").status_code == 404
    assert client.get("/nothing-here").json()["error"]


def test_exposure_warning_only_without_key_off_loopback() -> None:
    assert exposure_warning(ServeConfig(host="127.0.0.1")) is None
    assert exposure_warning(ServeConfig(host="::1")) is None
    assert exposure_warning(ServeConfig(host="localhost")) is None
    assert exposure_warning(ServeConfig(host="0.0.0.0", api_key="k")) is None
    assert "API key" in exposure_warning(ServeConfig(host="0.0.0.0"))


def test_cli_warns_off_loopback_and_checks_options(tmp_path: Path) -> None:
    # Stops before binding anything: the weights file does not exist.
    result = run_elir("serve", "--host", "0.0.0.0", "--weights", str(tmp_path / "none.safetensors"),
                      "--task", "denoising", timeout=60)
    assert "Warning: serving on 0.0.0.0 without an API key" in result.stderr.decode()
    assert "no such weights file" in assert_one_line_error(result)


def test_cli_port_in_use_is_one_line(tiny_denoising: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_elir("serve", "--port", str(port), "--weights", str(tiny_denoising), "--task", "denoising",
                          timeout=60)
    assert f"cannot listen on 127.0.0.1:{port}" in assert_one_line_error(result)


def test_cli_without_the_extra_says_how_to_install_it() -> None:
    code = ("import sys; sys.modules['fastapi'] = None; sys.argv = ['elir', 'serve']; "
            "from elir_cli.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    line = assert_one_line_error(result)
    assert "fastapi" in line and 'pip install "elir-cli[serve]"' in result.stderr.decode()


# -------------------------------------------------------------------- a real uvicorn


@pytest.fixture(scope="module")
def server(tiny_denoising: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve") / "tmp"
    srv = Server(tiny_denoising, tmp, "--queue", "2", "--max-upload-mb", "0.5", "--preload")
    yield srv
    code = srv.stop()
    assert code == 0, srv.log.read_text()
    left = [p for p in tmp.rglob("*") if p.is_file()]  # (torch makes an empty torchinductor_<user> folder)
    assert not left, f"temporary files left: {left}"


def test_real_server_every_endpoint(server: Server) -> None:
    base = server.base
    assert request(base + "/healthz").json()["loaded"] == ["denoising"]  # --preload
    r = post_image(base, "/v1/restore", png_bytes(), FAST)
    assert r.status == 200 and r.headers["content-type"] == "image/png"
    r = post_image(base, "/v1/restore?format=json", png_bytes(), FAST)
    assert r.status == 200 and base64.b64decode(r.json()["image"])[:4] == b"\x89PNG"
    job = post_image(base, "/v1/jobs", png_bytes(), FAST)
    assert job.status == 202
    job_id = job.json()["id"]
    wait_until(lambda: request(f"{base}/v1/jobs/{job_id}").json()["status"] == "done", 60, f"job {job_id} done")
    assert request(f"{base}/v1/jobs/{job_id}/result").body[:4] == b"\x89PNG"
    assert request(f"{base}/v1/jobs/{job_id}", "DELETE").status == 200
    assert request(f"{base}/v1/jobs/{job_id}").status == 404
    assert request(base + "/v1/models").status == 200
    assert request(base + "/openapi.json").status == 200 and request(base + "/docs").status == 200
    assert b"Restore photos" in request(base + "/").body


def raw_exchange(port: int, head: bytes, chunks: list[bytes] | None = None) -> tuple[int, bytes]:
    """Send a hand-made request (a chunked body if ``chunks``); return the answer's status and body.

    Stops sending as soon as an answer arrives, as a client should when a server refuses a body.
    """
    import select

    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        try:
            for chunk in chunks or []:
                if select.select([s], [], [], 0)[0]:
                    break  # answered already
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                if chunks is not None:
                    s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the body ended: what a limit should do
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer, "no answer"
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_real_server_refuses_huge_and_streamed_uploads(server: Server) -> None:
    head = (b"POST /v1/restore HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1000000000000\r\nConnection: close\r\n\r\n")
    status, body = raw_exchange(server.port, head)
    assert status == 413 and json.loads(body)["error"]
    head = (b"POST /v1/restore HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    start = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
    status, body = raw_exchange(server.port, head, chunks=[start] + [b"\0" * 65536] * 12)  # 768 KiB > 0.5 MiB
    assert status == 413 and "limit" in json.loads(body)["error"]
    status, body = raw_exchange(server.port, b"POST /v1/restore HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                             b"Connection: close\r\n\r\n")
    assert status == 422 and json.loads(body)["field"] == "image"
    r = post_image(server.base, "/v1/restore", b"GIF89a not really", FAST)
    assert r.status == 422 and r.json()["field"] == "image"
    assert post_image(server.base, "/v1/restore", png_bytes(), FAST).status == 200  # still serving


def test_real_server_413_reaches_clients_that_send_the_whole_body_first(server: Server) -> None:
    """urllib writes the whole body before it reads: the server drains it and answers 413 in JSON,
    not a closed socket ("broken pipe"), over a declared Content-Length and a chunked body alike."""
    over = b"\xff" * (3 * 1024 * 1024)  # the fixture's limit is 0.5 MiB
    for path in ("/v1/restore", "/v1/jobs"):
        r = post_image(server.base, path, over, FAST)  # urllib, Content-Length declared
        assert r.status == 413, (path, r.status, r.body[:200])
        assert "limit" in r.json()["error"] and r.json()["hint"]

    body, ctype = multipart(FAST, over)
    req = urllib.request.Request(server.base + "/v1/restore", method="POST", headers={"Content-Type": ctype},
                                 data=(body[i:i + 65536] for i in range(0, len(body), 65536)))  # chunked
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=60)
    assert refused.value.code == 413 and "limit" in json.loads(refused.value.read())["error"]
    assert post_image(server.base, "/v1/restore", png_bytes(), FAST).status == 200  # still serving


def test_real_server_under_concurrent_load(server: Server) -> None:
    """8 clients x 5 requests against a queue of 2: each answer is 200 or 429, none 5xx; memory stays put."""
    images = [png_bytes((64, 48), seed=s) for s in range(4)]
    for image in images:  # warm up: allocator pools, first-call caches
        assert post_image(server.base, "/v1/restore", image, FAST).status == 200
    before = rss_bytes(server.proc.pid)

    def client(n: int) -> list[int]:
        return [post_image(server.base, "/v1/restore", images[(n + i) % 4], FAST).status for i in range(5)]

    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(s for result in pool.map(client, range(8)) for s in result)
    after = rss_bytes(server.proc.pid)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] >= 8 and sum(statuses.values()) == 40, statuses
    assert after <= before * 1.10 + 20 * 2**20, (before, after)

    def idle() -> bool:
        health = request(server.base + "/healthz").json()
        return health["queue"] == 0 and health["busy"] == 0

    # The last answer can reach its client before the worker thread has counted itself idle.
    wait_until(idle, 30, "the server idle after the load (nothing queued, no worker busy)")
    assert not [p for p in server.tmp.rglob("*") if p.is_file()]  # no upload or result left on disk


# -------------------------------------------------------------------- the page in Chromium


@pytest.mark.browser
def test_page_in_a_real_browser(server: Server, tmp_path: Path) -> None:
    sync_api = chromium_or_skip()
    photo = tmp_path / "grace hopper.jpg"
    Image.open(PHOTOS / "faces" / "grace_hopper.jpg").resize((160, 188)).save(photo, quality=92)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=PHONE, accept_downloads=True)
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server.base + "/")
            page.wait_for_function("document.querySelectorAll('#task option').length > 0")
            assert page.locator("#task option").all_inner_texts() == ["Faces: grainy or noisy"]
            # phone width: nothing wider than the screen
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            # keyboard: the file picker, task and fidelity are reachable with Tab
            focused = []
            for _ in range(3):
                page.keyboard.press("Tab")
                focused.append(page.evaluate("document.activeElement.id"))
            assert focused == ["files", "task", "fidelity"], focused
            page.keyboard.press("ArrowLeft")  # fidelity 1.00 -> 0.95 from the keyboard
            assert page.locator("#fidelity-value").inner_text() == "0.95"
            page.set_input_files("#files", str(photo))
            page.click("#go")
            page.wait_for_selector(".result .compare:not([hidden])", timeout=120_000)
            assert "1 face" in page.locator(".details").inner_text()
            slider = page.locator(".slider")
            slider.focus()
            for _ in range(5):
                page.keyboard.press("ArrowRight")
            assert slider.input_value() == "55"
            assert page.locator(".before").evaluate("e => e.style.clipPath") == "inset(0px 45% 0px 0px)"
            with page.expect_download() as download_info:
                page.click(".download")
            download = download_info.value
            assert download.suggested_filename == "grace hopper_restored.jpg"
            saved = tmp_path / "download.jpg"
            download.save_as(saved)
            assert Image.open(saved).size == (160, 188)
            # what the docs show (ELIR_SCREENSHOTS=docs/images): phone width, then desktop
            screens = screens_dir(tmp_path)
            page.locator("#go").blur()
            check_png(save_png(page, screens / "serve-page-phone.png"), PHONE["width"])
            page.set_viewport_size(DESKTOP)
            check_png(save_png(page, screens / "serve-page.png"), DESKTOP["width"])
            assert not problems, problems
        finally:
            browser.close()
    # the page deleted its job after fetching the result
    assert not [p for p in server.tmp.rglob("*") if p.is_file()]


@pytest.mark.browser
def test_page_shows_each_faces_score_and_what_the_guard_did(server: Server, tmp_path: Path) -> None:
    """The options sent from the page reach the guard and the colour fix, and each face's score comes
    back marked in words and colour, outlined on the photo.

    The tiny random model is far below 60 dB at every fidelity, so the guard really fails the face.
    It scores the same at every fidelity, so it cannot make the guard lower one: how the page shows a
    lowered face is checked on a real answer whose face record is rewritten on the way to the page.
    """
    photo = tmp_path / "grace hopper.jpg"
    Image.open(PHOTOS / "faces" / "grace_hopper.jpg").resize((160, 188)).save(photo, quality=92)
    with chromium_page(DESKTOP) as (page, problems):
        page.goto(server.base + "/")
        page.wait_for_function("document.querySelectorAll('#task option').length > 0")
        page.click("details.more summary")
        page.fill("#min-faithfulness", "60")
        page.select_option("#color-fix", "wavelet")
        page.set_input_files("#files", str(photo))
        page.click("#go")
        page.wait_for_selector(".result .compare:not([hidden])", timeout=120_000)
        face = page.locator(".result ul.faces li")
        assert face.count() == 1 and face.get_attribute("class") == "failed"
        text = face.inner_text()
        found = re.fullmatch(r"Face 0: ([\d.]+) dB, ΔE ([\d.]+), fidelity 0\.00\nbelow the minimum even at fidelity 0",
                             text)
        assert found, text
        assert float(found.group(1)) < 60  # the guard had the minimum (without one it passes any face)
        assert float(found.group(2)) < 20  # the wavelet fix took the photo's colours (without: ~41)
        assert face.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
        outline = page.locator(".result .frame .face-box.failed")
        assert outline.count() == 1 and outline.inner_text() == "0"
        frame, shown = page.locator(".result .frame img.after").bounding_box(), outline.bounding_box()
        assert frame["x"] <= shown["x"] and shown["x"] + shown["width"] <= frame["x"] + frame["width"] + 1
        assert frame["y"] <= shown["y"] and shown["y"] + shown["height"] <= frame["y"] + frame["height"] + 1
        assert page.locator("#status").inner_text() == "Finished: 1 restored; 1 face below the minimum even at fidelity 0."
        # what the docs show (ELIR_SCREENSHOTS=docs/images): a face the guard could not save
        page.locator("#go").blur()
        check_png(save_png(page, screens_dir(tmp_path) / "serve-page-guard.png"), DESKTOP["width"])

        real_guards: list[str | None] = []

        def lowered(route) -> None:  # type: ignore[no-untyped-def]
            answer = route.fetch()
            job = answer.json()
            if job.get("status") == "done":
                real_guards.append(job["result"]["face_scores"][0]["guard"])
                job["result"]["face_scores"][0].update(guard="lowered", fidelity=0.5625)
            route.fulfill(response=answer, json=job)

        page.route("**/v1/jobs/*", lowered)
        page.fill("#min-faithfulness", "")
        page.set_input_files("#files", str(photo))
        page.click("#go")
        page.locator(".result .compare:not([hidden])").nth(1).wait_for(timeout=120_000)  # both shown
        assert real_guards == [None]  # the minimum emptied: the guard is off
        face = page.locator(".result").first.locator("ul.faces li")
        assert face.get_attribute("class") == "lowered"
        assert face.inner_text().endswith("fidelity 0.5625\nfidelity lowered to 0.5625 by the guard")
        assert page.locator(".result").first.locator(".face-box.lowered").count() == 1
        assert page.locator("#status").inner_text() == "Finished: 1 restored; 1 face lowered by the guard."
        # no guard for whole images, no colour fix for inpainting (this server serves neither: add them)
        assert page.locator("#min-faithfulness").is_enabled() and page.locator("#color-fix").is_enabled()
        page.evaluate("['bsr', 'inpainting'].forEach(t => document.querySelector('#task').add(new Option(t, t)))")
        page.select_option("#task", "bsr")
        assert page.locator("#min-faithfulness").is_disabled() and page.locator("#color-fix").is_enabled()
        page.select_option("#task", "inpainting")
        assert page.locator("#min-faithfulness").is_enabled() and page.locator("#color-fix").is_disabled()
        assert not problems, problems
