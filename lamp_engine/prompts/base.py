"""What every soft-prompt method shares: the module contract and vocabulary-sampled initialisation."""

from __future__ import annotations

import torch
from torch import nn

from lamp_engine.config import PromptConfig


class SoftPrompt(nn.Module):
    """A trainable prompt. `forward()` returns the (tokens x d) matrix prepended to the input embeddings.

    Parameters are fp32 whatever the backbone's dtype: the backbone casts the prompt when it prepends it.
    """

    def __init__(self, config: PromptConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self) -> torch.Tensor:
        raise NotImplementedError

    def adjust_input_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Hook for methods that also change the text's own embeddings (DePT); identity otherwise."""
        return embeds

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def ordinary_token_ids(tokenizer, limit: int = 5000) -> list[int]:
    """The first `limit` non-special ids of the vocabulary.

    SentencePiece and BPE vocabularies are ordered by frequency, so these are the most frequent tokens. Special
    tokens, placeholders like BERT's `[unused7]` and ids that decode to nothing are skipped.
    """
    special = set(tokenizer.all_special_ids)
    ids: list[int] = []
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        token = tokenizer.convert_ids_to_tokens(token_id)
        if not token or _is_placeholder(token):
            continue
        ids.append(token_id)
        if len(ids) == limit:
            break
    return ids


def sample_vocabulary_rows(embeddings: torch.Tensor, candidate_ids: list[int], rows: int,
                           generator: torch.Generator) -> torch.Tensor:
    """`rows` embedding vectors of distinct tokens drawn from `candidate_ids` (with replacement if too few)."""
    candidates = torch.tensor(candidate_ids)
    if rows <= len(candidates):
        picks = candidates[torch.randperm(len(candidates), generator=generator)[:rows]]
    else:
        picks = candidates[torch.randint(len(candidates), (rows,), generator=generator)]
    return embeddings[picks].detach().float().clone()


def _is_placeholder(token: str) -> bool:
    return (token.startswith("[") and token.endswith("]")) or (token.startswith("<") and token.endswith(">"))
