"""Optional CLIP filter (beyond the paper, off by default).

Each generated image is scored by the cosine similarity between its CLIP image embedding and
the text embedding of its class prompt (``clip_filter.template``, default ``a photo of
{class}``). Images below ``threshold`` are made again from retry seeds
``derive_seed(run seed, cell, index, attempt=k)``, k = 1..max_retries; the best-scoring attempt
is kept and its seed is what the manifest records.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import SynaugError
from ..prompts import display_name


class ClipScorer:
    """Score images against class prompts with a transformers ``CLIPModel``.

    Parameters
    ----------
    model : str
        Hub id or local folder holding a CLIPModel and its processor (safetensors only).
    template : str
        Text per class; ``{class}`` is replaced by the class name (underscores as spaces).
    device : str
    """

    def __init__(self, model: str, template: str = "a photo of {class}", device: str = "cpu",
                 local_files_only: bool = False):
        from transformers import CLIPModel, CLIPProcessor

        try:
            self.model = CLIPModel.from_pretrained(model, use_safetensors=True,
                                                   local_files_only=local_files_only).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(model, local_files_only=local_files_only)
        except Exception as e:  # many error types from hub / IO; all user-fixable
            first = (str(e).strip().splitlines() or [""])[0]
            raise SynaugError(f"cannot load CLIP model {model!r}: {type(e).__name__}: {first}") from None
        self.template, self.device = template, device
        self._text_cache: dict[str, object] = {}

    def _text(self, class_name: str):
        import torch

        if class_name not in self._text_cache:
            text = self.template.replace("{class}", display_name(class_name))
            tok = self.processor.tokenizer([text], padding="max_length", truncation=True, return_tensors="pt")
            with torch.inference_mode():
                emb = self.model.get_text_features(**{k: v.to(self.device) for k, v in tok.items()})
            emb = getattr(emb, "pooler_output", emb)
            self._text_cache[class_name] = torch.nn.functional.normalize(emb.float(), dim=-1)[0]
        return self._text_cache[class_name]

    def score(self, images: Sequence, class_names: Sequence[str]) -> list[float]:
        """Cosine similarity of each image with its class prompt, in [-1, 1]."""
        import torch

        px = self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            emb = self.model.get_image_features(pixel_values=px.to(self.device, self.model.dtype))
        emb = getattr(emb, "pooler_output", emb)
        emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        text = torch.stack([self._text(c) for c in class_names])
        return (emb * text).sum(-1).cpu().tolist()

