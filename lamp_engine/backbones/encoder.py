"""Encoder-only models (BERT, MiniLM): a trainable classification head on the mean-pooled text tokens.

Mean pooling over the text (prompt rows excluded) matches how sentence-transformers models such as MiniLM were
trained. The head's parameters are trainable and are reported apart from the prompt's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lamp_engine.aliases import BackboneFamily
from lamp_engine.backbones.base import Backbone, Encoded, Prompt, pad, pad_mask
from lamp_engine.errors import ModelError
from lamp_engine.tasks import Example


class EncoderBackbone(Backbone):
    family = BackboneFamily.ENCODER

    def prepare(self, examples: list[Example]) -> None:
        counts = {len(e.choices) for e in examples}
        if len(counts) != 1:
            raise ModelError("encoder models classify into a fixed set of labels; this task's candidate answers "
                             "vary per example: use a seq2seq or causal model")
        self.head = nn.Linear(self.hidden_size, counts.pop()).to(self.device)

    def class_logits(self, prompt: Prompt, batch: list[Encoded]) -> torch.Tensor:
        sources = [e.source for e in batch]
        text_mask = pad_mask(sources)
        embeds, mask = self.with_prompt(prompt, pad(sources, self.tokenizer.pad_token_id), text_mask)
        hidden = self.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, -text_mask.shape[1]:]
        weights = text_mask.to(self.device).unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        return self.head(pooled.float())

    def loss(self, prompt: Prompt, batch: list[Encoded]) -> torch.Tensor:
        labels = torch.tensor([e.label for e in batch], device=self.device)
        return F.cross_entropy(self.class_logits(prompt, batch), labels)

    def choice_scores(self, prompt: Prompt, batch: list[Encoded]) -> list[list[float]]:
        return torch.log_softmax(self.class_logits(prompt, batch), dim=-1).tolist()
