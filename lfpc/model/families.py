"""Backbone families: the one place holding each model family's conventions.

Every part of the project that depends on the backbone (image sizing and budgets, the coordinate convention of the
crop tool's boxes, model and processor classes, the vision-tower outputs the forward takes) reads it from the
:class:`Backbone` of the checkpoint's family, found from ``config.json``'s ``model_type``
(:func:`backbone_of`). Qwen2.5-VL is the default (the paper's backbone, Sec. 5.1).

Sources (repository, commit, file) of each convention:

* Qwen2.5-VL: 14 px patches, 2x2 merge, 28 px per visual token and the resize rule: transformers 5.19.0,
  ``models/qwen2_vl/image_processing_qwen2_vl.py`` (``smart_resize``, ``patch_size = 14``, ``merge_size = 2``);
  boxes in pixels of the image shown (the DeepEyes-style tool the paper trains, Sec. 3).
* Qwen3-VL: 16 px patches (``Qwen3VLVisionConfig.patch_size = 16``), 2x2 merge, 32 px per visual token, the same
  ``smart_resize`` applied by ``Qwen2VLImageProcessor`` with ``patch_size`` 16 (transformers 5.19.0,
  ``models/auto/image_processing_auto.py`` maps ``qwen3_vl`` to ``Qwen2VLImageProcessor``;
  ``models/qwen3_vl/configuration_qwen3_vl.py``); DeepStack visual features and interleaved M-RoPE positions
  computed by the model (``models/qwen3_vl/modeling_qwen3_vl.py``: ``get_image_features`` returns
  ``deepstack_features``; ``get_rope_index``); boxes of its zoom-in tool in relative coordinates 0-1000
  (github.com/QwenLM/Qwen3-VL at commit c253c773743e8fc9301e6896f06bb5d97363fd5e,
  ``cookbooks/think_with_images.ipynb``: "the ``bbox_2d`` for ``image_zoom_in_tool`` is relative coords with
  ranging [0, 1000]").
* Qwen3.5: ``Qwen3VLProcessor`` and ``Qwen2VLImageProcessor`` (transformers 5.19.0,
  ``models/auto/processing_auto.py``, ``models/auto/image_processing_auto.py``), 16 px patches
  (``models/qwen3_5/configuration_qwen3_5.py``), no DeepStack, gated-DeltaNet linear-attention text layers
  (``models/qwen3_5/modeling_qwen3_5.py``); box convention assumed to be Qwen3-VL's (not verified against Qwen code).
* All: the ChatML turns ``<|im_start|>role\\n...<|im_end|>\\n``, the image slot
  ``<|vision_start|><|image_pad|><|vision_end|>`` and Hermes-style ``<tool_call>{...}</tool_call>`` calls of the
  checkpoint's own ``chat_template.json`` (used as it is at run time: :mod:`lfpc.rollout.codec`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

Box = tuple[float, float, float, float]
Size = tuple[int, int]


@dataclass(frozen=True)
class Coordinates:
    """How a model writes a box: in pixels of the image it was shown (``scale`` None), or relative to that image's
    width and height on a ``[0, scale]`` grid (Qwen3-VL: 1000)."""

    name: str
    scale: float | None
    description: str  # what the tool schema tells the model about ``bbox_2d``

    def to_pixels(self, box: Box, size: Size) -> Box:
        """``box`` as the model wrote it, in pixels of the image of ``size`` (width, height) it names."""
        if self.scale is None:
            return box
        sx, sy = size[0] / self.scale, size[1] / self.scale
        return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)

    def from_pixels(self, box: Box, size: Size) -> Box:
        """A box in pixels of an image of ``size``, written in this convention (what the model should emit)."""
        if self.scale is None:
            return box
        sx, sy = self.scale / size[0], self.scale / size[1]
        return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


PIXELS = Coordinates("pixels", None, "in pixels of the image shown to you")
RELATIVE_1000 = Coordinates("relative_1000", 1000.0, "in coordinates relative to the image shown to you, from 0 "
                                                      "to 1000 on each axis ((0, 0) its top-left corner, "
                                                      "(1000, 1000) its bottom-right corner)")


@dataclass(frozen=True)
class Backbone:
    """The conventions of one model family.

    ``patch_size`` (ViT patch side, px) and ``merge_size`` (patches merged per side into one visual token) give
    ``token_side``, the pixels per side of one visual token; the processor resizes images to multiples of it
    (:func:`lfpc.vision.budget.smart_resize`). ``coordinates``: the convention of the boxes its zoom-in tool takes.
    ``model_class`` / ``processor_class``: transformers classes. ``deepstack``: the vision tower also returns
    per-layer features the language model adds at image positions (they must travel with cached image embeddings).
    ``recurrent_state``: some text layers are linear attention, whose cache is a recurrent state that cannot be cut
    at a token or shared between rows (the HF rollout engine then keeps no cache between turns).
    """

    name: str
    label: str
    model_type: str
    patch_size: int
    merge_size: int
    coordinates: Coordinates
    model_class: str
    processor_class: str
    deepstack: bool = False
    recurrent_state: bool = False

    @property
    def token_side(self) -> int:
        """Pixels per side of one visual token (patch x merge)."""
        return self.patch_size * self.merge_size

    def model_cls(self):
        """The transformers ``...ForConditionalGeneration`` class of this family."""
        import transformers
        return getattr(transformers, self.model_class)

    def processor_cls(self):
        """The transformers processor class of this family."""
        import transformers
        return getattr(transformers, self.processor_class)


QWEN2_5_VL = Backbone("qwen2_5_vl", "Qwen2.5-VL", "qwen2_5_vl", patch_size=14, merge_size=2, coordinates=PIXELS,
                      model_class="Qwen2_5_VLForConditionalGeneration", processor_class="Qwen2_5_VLProcessor")
QWEN3_VL = Backbone("qwen3_vl", "Qwen3-VL", "qwen3_vl", patch_size=16, merge_size=2, coordinates=RELATIVE_1000,
                    model_class="Qwen3VLForConditionalGeneration", processor_class="Qwen3VLProcessor", deepstack=True)

# Qwen3.5: the Qwen3-VL processor and 16 px patches, no DeepStack, linear-attention text layers. Its box convention is
# taken to be Qwen3-VL's (0-1000): no Qwen3.5 source stating it was found (docs/backbones.md, "Qwen3.5").
QWEN3_5 = Backbone("qwen3_5", "Qwen3.5", "qwen3_5", patch_size=16, merge_size=2, coordinates=RELATIVE_1000,
                   model_class="Qwen3_5ForConditionalGeneration", processor_class="Qwen3VLProcessor",
                   recurrent_state=True)

BACKBONES: dict[str, Backbone] = {b.model_type: b for b in (QWEN2_5_VL, QWEN3_VL, QWEN3_5)}
DEFAULT = QWEN2_5_VL


def backbone_for(model_type: str, where: str = "the model") -> Backbone:
    """The family of ``model_type`` (a ``config.json`` ``model_type``); a clear error for an unsupported one."""
    if model_type not in BACKBONES:
        raise ValueError(f"{where} is a {model_type!r} model; supported backbones: {sorted(BACKBONES)} "
                         "(lfpc/model/families.py)")
    return BACKBONES[model_type]


def backbone_of(path: str | os.PathLike) -> Backbone:
    """The family of the checkpoint folder ``path`` (its ``config.json`` ``model_type``)."""
    config = Path(path) / "config.json"
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    return backbone_for(model_type, str(Path(path)))
