"""Turns chat messages and images into token ids for a backbone's processor, one turn at a time.

Both supported families (:mod:`lfpc.model.families`) share the ChatML turn layout and the image slot below; the
opening is rendered by the checkpoint's own chat template, so a family's template is followed exactly.

Token-in/token-out: the prompt is templated once; later turns are appended as token ids, never re-templated.
"""

from __future__ import annotations

import torch
from PIL import Image

from lfpc.model.families import backbone_of
from lfpc.model.loading import checkpoint_dir, load_processor
from lfpc.rollout.base import Context
from lfpc.special_tokens import find_special_token
from lfpc.vision.budget import tokens_to_pixels

IMAGE_PAD = "<|image_pad|>"
IMAGE_SLOT = "<|vision_start|><|image_pad|><|vision_end|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOOL_CALL_END = "</tool_call>"
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", IMAGE_PAD, "<|video_pad|>")


class ChatCodec:
    """Encodes prompts, images and tool turns with one processor; the single source of token layout."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.backbone = processor.backbone
        self.merge = self.backbone.merge_size
        self.image_pad_id = self.token_id(IMAGE_PAD)
        self.im_end_id = self.token_id(IM_END)
        self.stop_token_ids = (self.im_end_id, self.token_id(TOOL_CALL_END))
        # the policy must never emit vision placeholders: they would be read as image positions
        self.vision_token_ids = tuple(self.token_id(t) for t in VISION_TOKENS)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.im_end_id

    @classmethod
    def for_model(cls, path: str, max_tokens: int) -> "ChatCodec":
        """The codec of a local model folder whose images hold 4 to ``max_tokens`` visual tokens (the processor then
        leaves every image the rollout already sized to a budget unchanged)."""
        side = backbone_of(checkpoint_dir(path)).token_side
        return cls(load_processor(path, min_pixels=tokens_to_pixels(4, side),
                                  max_pixels=tokens_to_pixels(max_tokens, side)))

    @property
    def token_side(self) -> int:
        """Pixels per side of one visual token of this codec's family (for :mod:`lfpc.vision.budget`)."""
        return self.backbone.token_side

    def token_id(self, token: str) -> int:
        """Id of a single special token; raise if the tokenizer splits it."""
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"tokenizer does not have {token!r} as a single token (got ids {ids})")
        return ids[0]

    def encode_image(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """Processor pixel values ``[patches, dim]`` and grid ``[3]`` (t, h, w) for one image."""
        out = self.image_processor(images=[image], return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"][0]

    def image_size(self, grid_thw: torch.Tensor) -> tuple[int, int]:
        """(width, height) in pixels of an image the processor encoded with this grid (unchanged by the processor)."""
        _, height, width = (int(v) for v in grid_thw)
        return width * self.backbone.patch_size, height * self.backbone.patch_size

    def completion_ids(self, text: str) -> list[int]:
        """Token ids of an assistant turn as a policy emits it: ending on a stop token (``<|im_end|>`` appended
        unless the text ends with one, e.g. ``</tool_call>``)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids if ids and ids[-1] in self.stop_token_ids else [*ids, self.im_end_id]

    def image_tokens(self, grid_thw: torch.Tensor) -> int:
        """Number of ``<|image_pad|>`` tokens an image of this grid occupies."""
        return int(grid_thw.prod().item()) // (self.merge * self.merge)

    def encode_text(self, text: str, grids: list[torch.Tensor]) -> list[int]:
        """Token ids of ``text`` with each ``<|image_pad|>`` expanded to its image's token count."""
        pieces = text.split(IMAGE_PAD)
        if len(pieces) - 1 != len(grids):
            raise ValueError(f"text has {len(pieces) - 1} image slots but {len(grids)} images were given")
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if piece:
                ids.extend(self.tokenizer.encode(piece, add_special_tokens=False))
            if i < len(grids):
                ids.extend([self.image_pad_id] * self.image_tokens(grids[i]))
        return ids

    def add_images(self, context: Context, images: list[Image.Image],
                   encodings: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[torch.Tensor]:
        """Record ``images`` on ``context`` with their :meth:`encode_image` outputs (computed here unless given);
        return their grids."""
        grids = []
        for image, (pixels, grid) in zip(images, encodings or map(self.encode_image, images)):
            context.images.append(image)
            context.pixel_values.append(pixels)
            context.image_grid_thw.append(grid)
            grids.append(grid)
        return grids

    @staticmethod
    def check_text(content: str | list[dict]) -> None:
        """Refuse text holding a special token (a message's content: a string or a list of items): text that is not
        the policy's own output (a question, an observation) must not open turns or image slots (see
        :mod:`lfpc.special_tokens`)."""
        texts = [content] if isinstance(content, str) else [i["text"] for i in content if i["type"] == "text"]
        for text in texts:
            token = find_special_token(text)
            if token:
                raise ValueError(f"a prompt or observation text contains the special token {token!r}, which only "
                                 f"the chat template may place: {text[:200]!r}")

    def start(self, messages: list[dict], images: list[Image.Image],
              encodings: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Context:
        """Template the opening messages (ending with the assistant generation prompt) into a new context.

        The processor's template renders them, as in the family's standard inference: a released folder may give its
        tokenizer a different, text-only template (``tokenizer_config.json``) that cannot render image items.
        """
        for message in messages:
            self.check_text(message["content"])
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        context = Context(token_ids=[], policy_mask=[], logprobs=[])
        grids = self.add_images(context, images, encodings)
        context.extend(self.encode_text(text, grids), from_policy=False)
        return context

    def append_user_turn(self, context: Context, content: list[dict], images: list[Image.Image],
                         encodings: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Close the assistant turn and append a user turn (text and image items), then reopen the assistant.

        ``encodings``: the images' :meth:`encode_image` outputs when the caller computed them already."""
        self.check_text(content)
        closing = "\n" if context.token_ids and context.token_ids[-1] == self.im_end_id else f"{IM_END}\n"
        body = "".join(IMAGE_SLOT if item["type"] == "image" else item["text"] for item in content)
        text = f"{closing}{IM_START}user\n{body}{IM_END}\n{IM_START}assistant\n"
        grids = self.add_images(context, images, encodings)
        context.extend(self.encode_text(text, grids), from_policy=False)

    def decode(self, token_ids: list[int]) -> str:
        """Text of generated tokens, special tokens kept except the end-of-turn marker."""
        if token_ids and token_ids[-1] == self.im_end_id:
            token_ids = token_ids[:-1]
        return self.tokenizer.decode(token_ids, skip_special_tokens=False)
