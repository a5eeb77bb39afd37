"""Encoder-decoder models (T5, Flan-T5, BART): the prompt goes on the encoder input; targets are label words."""

from __future__ import annotations

import torch

from lamp_engine.aliases import BackboneFamily
from lamp_engine.backbones.base import Backbone, Encoded, Prompt, pad, pad_mask, per_example


class Seq2SeqBackbone(Backbone):
    family = BackboneFamily.SEQ2SEQ

    def loss(self, prompt: Prompt, batch: list[Encoded]) -> torch.Tensor:
        sources = [e.source for e in batch]
        embeds, mask = self.with_prompt(prompt, pad(sources, self.tokenizer.pad_token_id), pad_mask(sources))
        labels = pad([e.target for e in batch], -100).to(self.device)
        return self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False).loss

    def choice_scores(self, prompt: Prompt, batch: list[Encoded]) -> list[list[float]]:
        """Log-likelihood of each candidate target; the encoder runs once per example."""
        sources = [e.source for e in batch]
        embeds, mask = self.with_prompt(prompt, pad(sources, self.tokenizer.pad_token_id), pad_mask(sources))
        encoded = self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        owner = torch.tensor([i for i, e in enumerate(batch) for _ in e.choices], device=self.device)
        targets = [choice for e in batch for choice in e.choices]
        labels = pad(targets, -100).to(self.device)
        logits = self.model(encoder_outputs=(encoded[owner],), attention_mask=mask[owner], labels=labels,
                            use_cache=False).logits
        scores = sequence_log_likelihood(logits, labels).tolist()
        return per_example(scores, batch)


def sequence_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over positions of log p(label), ignoring positions labelled -100."""
    keep = labels != -100
    picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(dim=-1)
