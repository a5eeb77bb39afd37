"""Decoder-only language models (Llama, SmolLM, GPT-2, Qwen).

A sequence is [prompt] source CUE target; the loss covers target tokens only, and classification scores each
candidate target by its log-likelihood (rank classification). Only the hidden states at target positions go
through the output layer, which saves the (tokens x vocabulary) logits of every source position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lamp_engine.aliases import BackboneFamily
from lamp_engine.backbones.base import Backbone, Encoded, Prompt, pad, pad_mask, per_example
from lamp_engine.tasks import Example

CUE = "\nAnswer:"


class CausalBackbone(Backbone):
    family = BackboneFamily.CAUSAL

    def encode(self, example: Example) -> Encoded:
        source, cut = self.ids(example.source, self.max_source_length)
        source = source + self.ids(CUE, 16, special=False)[0]
        word = lambda text: self.ids(" " + text, self.max_target_length, special=False)[0]  # noqa: E731
        return Encoded(source, word(example.target), [word(c) for c in example.choices],
                       example.choices.index(example.target), cut)

    def hidden_states(self, prompt: Prompt, rows: list[list[int]]) -> tuple[torch.Tensor, int]:
        """Last hidden states of [prompt] + each row, and the offset of the rows' first token."""
        embeds, mask = self.with_prompt(prompt, pad(rows, self.tokenizer.pad_token_id or 0), pad_mask(rows))
        hidden = self.model.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        return hidden, embeds.shape[1] - max(len(r) for r in rows)

    def target_log_probs(self, prompt: Prompt, sources: list[list[int]],
                         targets: list[list[int]]) -> list[torch.Tensor]:
        """log p(target token | prompt, source, earlier target tokens), one tensor per row."""
        hidden, offset = self.hidden_states(prompt, [s + t for s, t in zip(sources, targets, strict=True)])
        row_index = torch.tensor([i for i, t in enumerate(targets) for _ in t], device=self.device)
        position = torch.tensor([offset + len(s) - 1 + j for s, t in zip(sources, targets, strict=True)
                                 for j in range(len(t))], device=self.device)
        logits = self.model.get_output_embeddings()(hidden[row_index, position]).float()
        wanted = torch.tensor([tok for t in targets for tok in t], device=self.device)
        picked = -F.cross_entropy(logits, wanted, reduction="none")
        return list(picked.split([len(t) for t in targets]))

    def loss(self, prompt: Prompt, batch: list[Encoded]) -> torch.Tensor:
        per_row = self.target_log_probs(prompt, [e.source for e in batch], [e.target for e in batch])
        return -torch.cat(per_row).mean()

    def choice_scores(self, prompt: Prompt, batch: list[Encoded]) -> list[list[float]]:
        if all(len(c) == 1 for e in batch for c in e.choices):
            return self.next_token_scores(prompt, batch)
        sources = [e.source for e in batch for _ in e.choices]
        targets = [c for e in batch for c in e.choices]
        scores = [float(lp.sum()) for lp in self.target_log_probs(prompt, sources, targets)]
        return per_example(scores, batch)

    def next_token_scores(self, prompt: Prompt, batch: list[Encoded]) -> list[list[float]]:
        """Single-token answers share one pass: every choice's log-probability after the source's last token."""
        hidden, offset = self.hidden_states(prompt, [e.source for e in batch])
        last = torch.tensor([offset + len(e.source) - 1 for e in batch], device=self.device)
        rows = torch.arange(len(batch), device=self.device)
        log_probs = torch.log_softmax(self.model.get_output_embeddings()(hidden[rows, last]).float(), dim=-1)
        return [[log_probs[i, c[0]].item() for c in e.choices] for i, e in enumerate(batch)]
