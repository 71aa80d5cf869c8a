"""ELIR as a spandrel architecture: ``install()``, then spandrel's ``ModelLoader`` knows ELIR.

`spandrel <https://github.com/chaiNNer-org/spandrel>`_ (chaiNNer's model
loader, used by ComfyUI and AUTOMATIC1111) recognises an architecture from a
state dict and returns a model descriptor. :func:`install` adds ELIR to a
spandrel registry (its ``MAIN_REGISTRY`` by default), the way
``spandrel_extra_arches.install()`` adds its architectures; afterwards
``spandrel.ModelLoader().load_from_file(path)`` loads the authors' ``.pth``
and ``.ckpt`` files and our ``.safetensors``.

Recognition is by the tensors only, never the file name (:func:`detect`): the
state dict must be exactly an ELIR network (every key, every shape, nothing
else but our header tensor). The task comes from our header tensor
(:data:`~elir_cli.model.checkpoint.HEADER_KEY`, which every ``.safetensors``
elir-cli writes carries), or else from the architecture: bfr and bsr have
their own shapes, while the authors' sr, denoising and inpainting files hold
identical tensors and do not say which they are; loading one of those raises
a one-line error naming the command that records the task.

Each task becomes the descriptor spandrel's callers expect:

======================  ====================================  =======  ==================================
task                    descriptor (purpose)                  scale    the call
======================  ====================================  =======  ==================================
bfr                     ``ImageModelDescriptor`` (FaceSR)     1        an aligned 512 face crop
sr                      ``ImageModelDescriptor`` (FaceSR)     8        a tiny aligned face (32 px)
denoising               ``ImageModelDescriptor`` (Restoration) 1       an aligned 256 face crop
inpainting              ``MaskedImageModelDescriptor``         1       a 256 face crop and its mask
bsr                     ``ImageModelDescriptor`` (SR)         4        any photo (tiled inside)
======================  ====================================  =======  ==================================

A call runs our own pipeline (:func:`elir_cli.pipeline.photo.restore_photo`)
on the image, so it equals :class:`elir_cli.Restorer` with the same options
(``aligned=True`` for the face tasks at their size, ``whole_image=True`` for
sr, the tiler for bsr). ELIR samples noise; a spandrel caller expects a
function, so every call uses a fixed seed (``descriptor.model.seed``, 0 by
default). ``descriptor.model.fidelity`` and ``descriptor.model.steps`` set the
other two sampling options (:func:`configure` checks them).

The code here is ours; it follows spandrel's documented extension contract
(``Architecture``, ``ArchSupport``, the descriptors) and nothing of spandrel's
code is copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from elir_cli.errors import CheckpointError, ElirError, StateDictMismatchError, UsageError

try:
    import spandrel
except ImportError as exc:  # the module is only imported by people who want spandrel
    raise ImportError('elir_cli.integrations.spandrel needs spandrel: pip install "elir-cli[spandrel]"') from exc

import torch

from elir_cli.model.checkpoint import (
    Checkpoint,
    check_state_dict,
    from_training_groups,
    infer_architecture,
    is_training_checkpoint,
    split_header,
)
from elir_cli.model.config import ModelConfig
from elir_cli.model.elir import ElirModel
from elir_cli.registry.fit import resolve_config
from elir_cli.registry.tasks import get_task, load_manifest

if TYPE_CHECKING:
    import numpy as np

ARCH_ID = "ELIR"
EXTRA_HINT = 'pip install "elir-cli[spandrel]"'
DEFAULT_SEED = 0
# Keys every ELIR state dict has (released format), checked before anything costs time.
_SIGNATURE = ("enc.layers.0.weight", "mmse.lrm.0.RDB1.conv1.block.0.weight", "fmir.first_proj.weight",
              "dec.layers.18.weight")
# (purpose, scale from the task, masked) per task; sizes come from the task registry.
_PURPOSES = {"bfr": "FaceSR", "sr": "FaceSR", "denoising": "Restoration", "inpainting": "Inpainting",
             "bsr": "SR"}
# An LR multiple that makes bsr's x4 input a multiple of the network's 32 with no padding inside.
BSR_MULTIPLE = 8
CONVERT = "elir export --format safetensors --task TASK --weights FILE -o elir_TASK.safetensors"


class SpandrelElir(ElirModel):
    """ELIR as spandrel holds it (``descriptor.model``): the network and the sampling a call uses.

    ``seed``: the noise of every call (a spandrel caller expects a function,
    so it is fixed); ``fidelity``: 0 = the faithful coarse estimate, 1 = the
    full flow; ``steps``: Euler steps (None: the task's K). Set them directly
    or with :func:`configure`, which checks them.
    """

    def __init__(self, config: ModelConfig, task: str) -> None:
        super().__init__(config)
        self.task = task
        self.seed: int = DEFAULT_SEED
        self.fidelity: float = 1.0
        self.steps: int | None = None


# -- recognising -----------------------------------------------------------------------------

def detect(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` is an ELIR network, by its keys and shapes alone.

    Accepts the released and our format (flat, ``enc.``/``mmse.``/``fmir.``/
    ``dec.``, our header tensor allowed) and the authors' training format
    (four state dicts, over-parametrised convs). Every key and shape must
    fit an ELIR built from the architecture the shapes describe: a state dict
    that merely shares some key names is not taken. Never raises.
    """
    try:
        weights, _ = _released_format(state_dict, shapes_only=True)
        _check_network(weights)
    except (CheckpointError, StateDictMismatchError, ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


def _released_format(state: Mapping[str, Any], *, shapes_only: bool = False
                     ) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The flat released-format state dict and our header (None where absent).

    ``shapes_only``: collapse a training checkpoint's convs on the meta device
    (shapes, no arithmetic), for detection.
    """
    if not isinstance(state, Mapping):
        raise TypeError("not a state dict")
    if is_training_checkpoint(state):
        groups = dict(state)
        if shapes_only:
            groups = {g: {k: _meta(v) for k, v in sub.items()} if isinstance(sub, Mapping) else sub
                      for g, sub in groups.items()}
        return from_training_groups(groups), None
    if not all(key in state for key in _SIGNATURE):
        raise KeyError("not ELIR's keys")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise TypeError("not a state dict of tensors")
    return split_header(dict(state))


def _meta(value: Any) -> Any:
    return torch.empty_like(value, device="meta") if isinstance(value, torch.Tensor) else value


def _check_network(weights: dict[str, torch.Tensor]) -> dict[str, object]:
    """The architecture of ``weights``; raises unless they fit it exactly."""
    arch = infer_architecture(weights)
    with torch.device("meta"):
        reference = ElirModel(ModelConfig(k_steps=1, sigma_s=0.0, **arch))  # type: ignore[arg-type]
    check_state_dict(reference, weights, "state dict")
    return arch


def tasks_with_architecture(arch: Mapping[str, object]) -> list[str]:
    """The registry's tasks whose network has the architecture ``arch`` (as :func:`infer_architecture` reads it)."""
    found = []
    for name, task in load_manifest().tasks.items():
        model = task.model
        own = {key: getattr(model, key) for key in arch}
        if own == dict(arch):
            found.append(name)
    return found


def task_of(state_dict: Mapping[str, Any]) -> str:
    """The task of an ELIR state dict: its header's, or the only task with its architecture.

    Raises :class:`~elir_cli.errors.CheckpointError` where the tensors fit
    several tasks (the authors' sr, denoising and inpainting files) and no
    header says which.
    """
    weights, header = _released_format(state_dict, shapes_only=True)
    return _task(weights, header)


def _task(weights: dict[str, torch.Tensor], header: dict | None) -> str:
    # spandrel's callers show an exception's text only, so each message carries its fix.
    if header == {}:
        raise CheckpointError("the elir-cli header tensor of these weights is damaged; convert the original "
                              f"file again ({CONVERT})")
    known = load_manifest().tasks
    if header is not None and header.get("task"):
        task = str(header["task"])
        if task not in known:
            raise CheckpointError(f"these weights are for task {task!r}, which this elir-cli does not know; "
                                  "upgrade elir-cli")
        return task
    arch = _check_network(weights)
    fits = tasks_with_architecture(arch)
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise CheckpointError("these ELIR weights fit none of the released tasks' networks and do not say "
                              f"their task; convert them naming it ({CONVERT})")
    raise CheckpointError(
        f"these ELIR weights fit tasks {', '.join(fits)} (the same tensors) and the file does not say which; "
        f"convert it once naming its task ({CONVERT.replace('TASK', fits[0])}): the result records it")


# -- loading ---------------------------------------------------------------------------------

class ElirArch(spandrel.Architecture[SpandrelElir]):
    """ELIR in spandrel's terms: detection by :func:`detect`, a descriptor per task."""

    def __init__(self) -> None:
        super().__init__(id=ARCH_ID, name="ELIR", detect=detect)

    def load(self, state_dict: Mapping[str, Any]
             ) -> "spandrel.ImageModelDescriptor[SpandrelElir] | spandrel.MaskedImageModelDescriptor[SpandrelElir]":
        weights, header = _released_format(state_dict)
        task = _task(weights, header)
        config = _config(weights, header, task)
        with torch.device("meta"):
            model = SpandrelElir(config, task)
        model = model.to_empty(device="cpu")  # the descriptor loads the weights into it (strict)
        return descriptor_for(model, weights, self)


def _config(weights: dict[str, torch.Tensor], header: dict | None, task: str) -> ModelConfig:
    header_config = None
    if header:
        header_config = ModelConfig.from_dict(header["config"])
    return resolve_config(Checkpoint(state_dict=weights, format="pth", config=header_config,
                                     task=header.get("task") if header else None), task)


def descriptor_for(model: SpandrelElir, weights: dict[str, torch.Tensor], arch: "spandrel.Architecture[Any]"):
    """The spandrel descriptor of one ELIR task (the weights are loaded into ``model`` by spandrel)."""
    spec = get_task(model.task)
    size = spec.input_size
    common: dict[str, Any] = dict(
        architecture=arch, tags=[model.task, f"{size}px", f"K={model.config.k_steps}"],
        # fp16 is not claimed: spandrel runs no calibration, and elir-cli's own runtime uses fp16
        # only where a calibration record for the weights passes. bf16 passed on every record so far.
        supports_half=False, supports_bfloat16=True, input_channels=3, output_channels=3)
    if model.task == "inpainting":
        return spandrel.MaskedImageModelDescriptor(
            model, weights, purpose="Inpainting",
            size_requirements=spandrel.SizeRequirements(minimum=size, square=True),
            tiling=spandrel.ModelTiling.DISCOURAGED, call_fn=_call_masked, **common)
    if spec.kind == "image":  # bsr: any photo, tiled inside as the authors evaluate it
        requirements = spandrel.SizeRequirements(multiple_of=BSR_MULTIPLE)
        tiling = spandrel.ModelTiling.INTERNAL
    elif spec.scale > 1:  # sr: a tiny face, nearest-exact x8 into the network
        requirements = spandrel.SizeRequirements(minimum=size // spec.scale, square=True)
        tiling = spandrel.ModelTiling.DISCOURAGED
    else:  # bfr, denoising: an aligned face crop at the task's size
        requirements = spandrel.SizeRequirements(minimum=size, square=True)
        tiling = spandrel.ModelTiling.DISCOURAGED
    return spandrel.ImageModelDescriptor(
        model, weights, purpose=_PURPOSES[model.task], scale=spec.scale, size_requirements=requirements,
        tiling=tiling, call_fn=_call, **common)


def configure(descriptor: Any, *, seed: int | None = None, fidelity: float | None = None,
              steps: int | None = None) -> None:
    """Set the sampling of an ELIR descriptor's calls, checked as ``elir restore`` checks them."""
    model = descriptor.model
    if not isinstance(model, SpandrelElir):
        raise UsageError(f"not an ELIR descriptor (its model is a {type(model).__name__})")
    settings = _settings(model, seed=model.seed if seed is None else seed,
                         fidelity=model.fidelity if fidelity is None else fidelity,
                         steps=model.steps if steps is None else steps)
    model.seed, model.fidelity, model.steps = int(settings.seed), settings.fidelity, settings.steps


def _settings(model: SpandrelElir, **sampling: Any):
    from elir_cli.pipeline.settings import RestoreSettings

    spec = get_task(model.task)
    layout = {"aligned": True} if spec.kind == "face" and spec.scale == 1 else \
        {"whole_image": True} if spec.kind == "face" else {}
    return RestoreSettings(task=model.task, **layout, **sampling)


# -- calling ------------------------------------------------------------------------------------

def _call(model: SpandrelElir, image: torch.Tensor) -> torch.Tensor:
    return _restore(model, image, None)


def _call_masked(model: SpandrelElir, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _restore(model, image, mask[0, 0].detach().float().cpu().numpy() >= 0.5)


def _restore(model: SpandrelElir, image: torch.Tensor, mask: "np.ndarray | None") -> torch.Tensor:
    """One (1,3,H,W) image through our pipeline, as :class:`elir_cli.Restorer` restores it."""
    from elir_cli.pipeline.photo import model_restorer, restore_photo

    if image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"ELIR takes one RGB image (1,3,H,W), got {tuple(image.shape)}")
    settings = _settings(model, seed=model.seed, fidelity=model.fidelity, steps=model.steps)
    dtype = next(model.parameters()).dtype
    # spandrel's .to(dtype) casts the weights; ELIR's sampler stays float32 and the network runs under autocast.
    model.compute_dtype = dtype if dtype in (torch.float16, torch.bfloat16) else None
    rgb = image[0].detach().float().permute(1, 2, 0).cpu().numpy()  # (H,W,3)
    restorer: Callable[[torch.Tensor], torch.Tensor] = model_restorer(
        model, seed=settings.seed, steps=settings.steps, fidelity=settings.fidelity)
    try:
        result = restore_photo(rgb, settings, restorer=restorer, device=image.device, batch_size=1, mask=mask)
    except ElirError as exc:  # spandrel's callers show an exception's text: one line, with the fix
        message, hint = exc.render()
        raise ValueError(f"{message}; {hint}" if hint else message) from None
    out = torch.from_numpy(result.array).permute(2, 0, 1)[None]  # (1,3,H*scale,W*scale)
    return out.to(device=image.device, dtype=image.dtype)


# -- installing -----------------------------------------------------------------------------------

def install(registry: "spandrel.ArchRegistry | None" = None, ignore_duplicates: bool = True
            ) -> list["spandrel.ArchSupport"]:
    """Add ELIR to ``registry`` (spandrel's ``MAIN_REGISTRY`` by default); returns what was added.

    Installing twice adds nothing the second time (``ignore_duplicates``).
    ELIR is detected after spandrel's own architectures; :func:`detect` is
    exact, so the order decides nothing (tests run every spandrel
    architecture through it both ways).
    """
    target = spandrel.MAIN_REGISTRY if registry is None else registry
    return target.add(spandrel.ArchSupport.from_architecture(ElirArch()), ignore_duplicates=ignore_duplicates)
