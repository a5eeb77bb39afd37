"""What every soft-prompt method shares: its files in the run folder and vocabulary-sampled initialisation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lamp_engine.export import save_peft_adapter, save_prompt
from lamp_engine.modules import MethodModule

if TYPE_CHECKING:
    from lamp_engine.backbones.base import Backbone


class SoftPrompt(MethodModule):
    """A trained prompt prepended to the input embeddings."""

    def save(self, folder: Path, backbone: Backbone, config: dict) -> None:
        """prompt.safetensors (the method's parameters, the encoder's head, the materialised prompt) and, where the
        method's prompt alone reproduces our outputs, a PEFT prompt-tuning adapter in peft/."""
        save_prompt(folder, self, backbone.head, config)
        if backbone.family in ("seq2seq", "causal") and self.config.exports_peft:
            with torch.no_grad():
                rows = self().detach().float().cpu()
            save_peft_adapter(folder / "peft", rows, backbone.family, backbone.model.config, config["model"])


def ordinary_token_ids(tokenizer, limit: int = 5000, rule: str = "frequent") -> tuple[list[int], str]:
    """The ids the initial prompt is sampled from, and the rule that chose them (recorded in the run's result).

    "frequent": SentencePiece and BPE vocabularies are ordered by frequency, so their first `limit` ordinary ids
    are the most frequent tokens (what the paper and Lester et al.'s code take). WordPiece vocabularies (BERT,
    MiniLM) are not: a fifth of their first 5,000 ids are single characters, many non-ASCII, and `##`
    continuation pieces; there the first `limit` whole words of two or more ASCII characters are taken.
    "words": the first `limit` whole alphabetic words of two or more ASCII letters in any vocabulary (a BPE
    vocabulary's first ids are single bytes and word pieces). Special tokens, placeholders like `[unused7]` and
    ids that decode to nothing are skipped by every rule.
    """
    special = set(tokenizer.all_special_ids)
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    wordpiece = sum(token.startswith("##") for token in vocabulary if token) > len(vocabulary) // 20
    keep = _alphabetic_word if rule == "words" else _whole_ascii_word if wordpiece else lambda token: True
    ids: list[int] = []
    for token_id, token in enumerate(vocabulary):
        if token_id in special or not token or _is_placeholder(token) or not keep(token):
            continue
        ids.append(token_id)
        if len(ids) == limit:
            break
    if rule == "words":
        return ids, f"the first {len(ids):,} whole alphabetic words of 2+ ASCII letters"
    if wordpiece:
        return ids, (f"the first {len(ids):,} WordPiece whole words of 2+ ASCII characters (single characters, "
                     "## continuations and non-ASCII pieces skipped)")
    return ids, f"the first {len(ids):,} ordinary ids (the vocabulary's frequency order)"


def sample_vocabulary_rows(embeddings: torch.Tensor, candidate_ids: list[int], rows: int,
                           generator: torch.Generator) -> torch.Tensor:
    """`rows` embedding vectors of distinct tokens drawn from `candidate_ids` (with replacement if too few)."""
    candidates = torch.tensor(candidate_ids)
    if rows <= len(candidates):
        picks = candidates[torch.randperm(len(candidates), generator=generator)[:rows]]
    else:
        picks = candidates[torch.randint(len(candidates), (rows,), generator=generator)]
    return embeddings[picks].detach().float().clone()


def _whole_ascii_word(token: str) -> bool:
    return len(token) >= 2 and token.isascii() and not token.startswith("##")


def _alphabetic_word(token: str) -> bool:
    """A whole word: BPE's and SentencePiece's word-start markers (Ġ, ▁) aside, two or more ASCII letters."""
    word = token.lstrip("Ġ▁")
    return len(word) >= 2 and word.isascii() and word.isalpha() and not token.startswith("##")


def _is_placeholder(token: str) -> bool:
    return (token.startswith("[") and token.endswith("]")) or (token.startswith("<") and token.endswith(">"))
