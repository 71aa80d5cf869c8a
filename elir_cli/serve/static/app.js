// The elir web page: upload photos as jobs, follow their progress, compare and download.
// Plain JavaScript, no build step and no third-party code: it works offline.
"use strict";

const PLAIN_LABELS = {
  bfr: "Faces: old, blurry or damaged",
  sr: "Faces: tiny or very low resolution (x8)",
  denoising: "Faces: grainy or noisy",
  inpainting: "Faces: scratches or missing parts",
  bsr: "Whole photo: enlarge x4 and sharpen",
};
// Tasks whose faces the guard cannot watch (they restore whole images), and those without the
// input's colour everywhere; the server refuses those options for them.
const WHOLE_IMAGE_TASKS = ["bsr"];
const NO_COLOR_FIX_TASKS = ["inpainting"];
// What the guard did to a face (the JSON answer's face_scores[].guard), in the batch report's words.
const GUARD_NOTES = {
  lowered: (fidelity) => `fidelity lowered to ${fidelity} by the guard`,
  failed: () => "below the minimum even at fidelity 0",
};
const BROWSER_TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif", "image/avif", "image/bmp"];
const POLL_MS = 400;
const $ = (selector, root = document) => root.querySelector(selector);

let apiKey = sessionStorage.getItem("elir-key") || "";
let chosen = [];

function headers() {
  return apiKey ? { "X-API-Key": apiKey } : {};
}

function setStatus(text) {
  $("#status").textContent = text;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error + (body.hint ? ` (${body.hint})` : "");
  } catch (e) {
    return `HTTP ${response.status}`;
  }
}

async function loadTasks() {
  const health = await (await fetch("/healthz")).json();
  const select = $("#task");
  select.textContent = "";
  for (const task of health.tasks) {
    const option = document.createElement("option");
    option.value = task;
    option.textContent = PLAIN_LABELS[task] || task;
    option.selected = task === health.task;
    select.append(option);
  }
  $("#key-row").hidden = !health.api_key_required;
  if (health.api_key_required) $("#key").value = apiKey;
  taskChanged();
}

function taskChanged() {
  const task = $("#task").value;
  $("#min-faithfulness").disabled = WHOLE_IMAGE_TASKS.includes(task);
  $("#color-fix").disabled = NO_COLOR_FIX_TASKS.includes(task);
}

function choose(files) {
  chosen = Array.from(files).filter((f) => f.size > 0);
  $("#go").disabled = chosen.length === 0;
  setStatus(chosen.length ? `${chosen.length} photo${chosen.length > 1 ? "s" : ""} chosen.` : "No photo chosen.");
}

function upload(file, onProgress) {
  // XMLHttpRequest, not fetch: it reports upload progress.
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("image", file, "upload");
    form.append("task", $("#task").value);
    form.append("fidelity", $("#fidelity").value);
    const minimum = $("#min-faithfulness");
    if (!minimum.disabled && minimum.value.trim() !== "") form.append("min_faithfulness", minimum.value.trim());
    if (!$("#color-fix").disabled) form.append("color_fix", $("#color-fix").value);
    if (!BROWSER_TYPES.includes(file.type)) form.append("ext", "png"); // something the page can show
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs");
    for (const [name, value] of Object.entries(headers())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => resolve(xhr);
    xhr.onerror = () => reject(new Error("the connection to the server failed"));
    xhr.send(form);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function restoreOne(file, card) {
  const bar = $("progress", card);
  const state = $(".state", card);
  let xhr;
  for (;;) {
    state.textContent = "Uploading…";
    xhr = await upload(file, (f) => { bar.value = 0.2 * f; });
    if (xhr.status !== 429) break;
    const wait = Number(xhr.getResponseHeader("Retry-After") || "2");
    state.textContent = `The server is busy; trying again in ${wait} s…`;
    await sleep(wait * 1000);
  }
  if (xhr.status === 401) {
    $("#key-row").hidden = false;
    throw new Error("this server needs an access key: enter it above and press Restore again");
  }
  const created = JSON.parse(xhr.responseText);
  if (xhr.status !== 202) throw new Error(created.error || `HTTP ${xhr.status}`);
  let job = created;
  while (job.status === "queued" || job.status === "running") {
    state.textContent = job.status === "queued" ? "Waiting for the model…" : `Restoring (${job.stage})…`;
    bar.value = 0.2 + 0.75 * job.progress;
    await sleep(POLL_MS);
    const r = await fetch(`/v1/jobs/${job.id}`, { headers: headers() });
    if (!r.ok) throw new Error(await errorText(r));
    job = await r.json();
  }
  if (job.status !== "done") throw new Error(job.error || `the job was ${job.status}`);
  const r = await fetch(job.result_url, { headers: headers() });
  if (!r.ok) throw new Error(await errorText(r));
  const blob = await r.blob();
  fetch(`/v1/jobs/${job.id}`, { method: "DELETE", headers: headers() }); // the page has the bytes now
  bar.value = 1;
  show(card, file, blob, job.result);
  return job.result;
}

// A fidelity as the batch report shows it: two decimals, up to four where the guard chose a finer one.
const fidelityText = (value) => value.toFixed(4).replace(/0{1,2}$/, "");

function showScores(card, result) {
  const list = $(".faces", card);
  list.textContent = "";
  for (const score of result.face_scores || []) {
    const item = document.createElement("li");
    item.className = score.guard || "passed";
    const name = document.createElement("b");
    name.textContent = `Face ${score.index}`;
    const values = [`${score.faithfulness_db.toFixed(2)} dB`, `ΔE ${score.delta_e.toFixed(2)}`,
                    `fidelity ${fidelityText(score.fidelity)}`];
    if (score.identity !== null && score.identity !== undefined) values.push(`identity ${score.identity.toFixed(2)}`);
    item.append(name, `: ${values.join(", ")} `);
    const note = GUARD_NOTES[score.guard];
    if (note) {
      const strong = document.createElement("strong");
      strong.className = "guard";
      strong.textContent = note(fidelityText(score.fidelity));
      item.append(strong);
    }
    list.append(item);
  }
  if (result.faithfulness) {
    const item = document.createElement("li");
    const name = document.createElement("b");
    name.textContent = "Whole image";
    item.append(name, `: ${result.faithfulness.faithfulness_db.toFixed(2)} dB, ΔE ${result.faithfulness.delta_e.toFixed(2)}`);
    list.append(item);
  }
  list.hidden = list.children.length === 0;
}

function drawFaceBoxes(card, result) {
  // Outlines over the faces the guard lowered or could not save, numbered as in the list; the
  // boxes are in the input's pixels, so they are placed once the "before" image knows its size.
  const before = $(".before", card);
  const frame = $(".frame", card);
  const draw = () => {
    const width = before.naturalWidth, height = before.naturalHeight;
    if (!width || !height) return;
    (result.face_scores || []).forEach((score, i) => {
      const box = (result.face_boxes || [])[i];
      if (!box || !GUARD_NOTES[score.guard]) return;
      const clamp = (v) => Math.min(1, Math.max(0, v));
      const [x0, y0, x1, y1] = [clamp(box[0] / width), clamp(box[1] / height), clamp(box[2] / width), clamp(box[3] / height)];
      const outline = document.createElement("div");
      outline.className = `face-box ${score.guard}`;
      outline.setAttribute("aria-hidden", "true");
      Object.assign(outline.style, { left: `${100 * x0}%`, top: `${100 * y0}%`, width: `${100 * (x1 - x0)}%`,
                                     height: `${100 * (y1 - y0)}%` });
      const label = document.createElement("span");
      label.textContent = String(score.index);
      outline.append(label);
      frame.append(outline);
    });
  };
  if (before.complete && before.naturalWidth) draw();
  else before.addEventListener("load", draw, { once: true });
}

function show(card, file, blob, result) {
  const after = URL.createObjectURL(blob);
  const before = URL.createObjectURL(file);
  $(".after", card).src = after;
  const beforeImg = $(".before", card);
  beforeImg.onerror = () => { beforeImg.hidden = true; };
  beforeImg.src = before;
  const slider = $(".slider", card);
  const move = () => {
    const v = Number(slider.value);
    beforeImg.style.clipPath = `inset(0 ${100 - v}% 0 0)`;
    $(".divider", card).style.left = `${v}%`;
    slider.setAttribute("aria-valuetext", `${v}% before`);
  };
  slider.addEventListener("input", move);
  move();
  const faces = result.faces;
  const seconds = Object.values(result.timings).reduce((a, b) => a + b, 0);
  $(".details", card).textContent =
    `${result.size[0]}×${result.size[1]}, ${faces} face${faces === 1 ? "" : "s"} restored, ${seconds.toFixed(1)} s` +
    (result.warnings.length ? `. Note: ${result.warnings.join("; ")}` : "");
  showScores(card, result);
  drawFaceBoxes(card, result);
  const stem = file.name.replace(/\.[^.]*$/, "") || "photo";
  const link = $(".download", card);
  link.href = after;
  link.download = `${stem}_restored.${result.format}`;
  link.textContent = `Download ${link.download}`;
  $(".state", card).textContent = "Done.";
  $(".compare", card).hidden = false;
}

async function restoreAll(event) {
  event.preventDefault();
  apiKey = $("#key").value.trim() || apiKey;
  if (apiKey) sessionStorage.setItem("elir-key", apiKey);
  const files = chosen;
  $("#go").disabled = true;
  let failed = 0;
  const guarded = { lowered: 0, failed: 0 };
  for (const [i, file] of files.entries()) {
    setStatus(`Restoring ${i + 1} of ${files.length}…`);
    const card = $("#result-template").content.firstElementChild.cloneNode(true);
    $(".name", card).textContent = file.name;
    $("#results").prepend(card);
    try {
      const result = await restoreOne(file, card);
      for (const score of result.face_scores || []) {
        if (score.guard in guarded) guarded[score.guard] += 1;
      }
    } catch (e) {
      failed += 1;
      card.classList.add("failed");
      $(".state", card).textContent = `Not restored: ${e.message}`;
      $("progress", card).hidden = true;
    }
  }
  const faces = (n) => `${n} face${n === 1 ? "" : "s"}`;
  const guard = [guarded.lowered ? `${faces(guarded.lowered)} lowered by the guard` : "",
                 guarded.failed ? `${faces(guarded.failed)} below the minimum even at fidelity 0` : ""]
    .filter(Boolean).join(", ");
  setStatus(`Finished: ${files.length - failed} restored` + (failed ? `, ${failed} failed` : "") +
            (guard ? `; ${guard}.` : "."));
  $("#go").disabled = chosen.length === 0;
}

function setUp() {
  const drop = $("#drop");
  $("#files").addEventListener("change", (e) => choose(e.target.files));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); choose(e.dataTransfer.files); });
  const fidelity = $("#fidelity");
  fidelity.addEventListener("input", () => { $("#fidelity-value").textContent = Number(fidelity.value).toFixed(2); });
  $("#form").addEventListener("submit", restoreAll);
  $("#task").addEventListener("change", taskChanged);
  loadTasks().catch((e) => setStatus(`Cannot reach the server: ${e.message}`));
}

document.addEventListener("DOMContentLoaded", setUp);
