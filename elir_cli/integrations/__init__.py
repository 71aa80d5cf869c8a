"""Inside the tools people already use: spandrel and ComfyUI.

:mod:`.spandrel` adds ELIR to spandrel's architecture registry
(``install()``), so spandrel's ``ModelLoader`` (chaiNNer, ComfyUI,
AUTOMATIC1111) recognises ELIR weights by their tensors and returns a model
descriptor whose call restores with our pipeline. :mod:`.comfyui` is a
ComfyUI custom-node pack over :class:`elir_cli.Restorer`, and
:mod:`.comfyui_install` puts it into a ComfyUI folder (``elir comfyui
install``). Each needs its host (the ``spandrel`` extra; ComfyUI brings its
own Python) and stays thin over the library API.

Layer 5 (a front end, beside the CLI). May import: elir_cli.runner, elir_cli.pipeline, elir_cli.faces, elir_cli.images, elir_cli.registry, elir_cli.model.
"""
