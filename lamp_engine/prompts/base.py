"""What every soft-prompt method shares: its start from vocabulary rows and its files in the run folder."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lamp_engine.aliases import BackboneFamily
from lamp_engine.backbones.base import Backbone
from lamp_engine.export import save_peft_adapter, save_prompt
from lamp_engine.methods import SoftPromptConfig
from lamp_engine.modules import MethodModule


class SoftPrompt(MethodModule):
    """A trained prompt prepended to the input embeddings."""

    @classmethod
    def initial_prompt(cls, config: SoftPromptConfig, backbone: Backbone,
                       generator: torch.Generator) -> tuple[torch.Tensor, str]:
        """The l x d prompt the method starts from, and the rule that chose its rows (recorded in the run)."""
        return vocabulary_prompt(backbone, config.length, generator)

    def save(self, folder: Path, backbone: Backbone, config: dict) -> None:
        """prompt.safetensors (the method's parameters, the encoder's head, the materialised prompt) and, where the
        method's prompt alone reproduces our outputs, a PEFT prompt-tuning adapter in peft/."""
        save_prompt(folder, self, backbone.head, config)
        if backbone.family is not BackboneFamily.ENCODER and self.config.exports_peft:
            with torch.no_grad():
                rows = self().detach().float().cpu()
            save_peft_adapter(folder / "peft", rows, backbone.family, backbone.model.config, config["model"])


def vocabulary_prompt(backbone: Backbone, length: int, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    """`length` input embeddings of distinct tokens drawn from the 5,000 most frequent ordinary ones, as the paper
    initialises its prompt, and the rule that chose them."""
    ids, rule = ordinary_token_ids(backbone.tokenizer)
    return sample_vocabulary_rows(backbone.model.get_input_embeddings(), ids, length, generator), rule


def repeated_rows(rows: torch.Tensor, rule: str, repeats: int) -> tuple[torch.Tensor, str]:
    """Each row repeated `repeats` times in place (LAMP's start: pooling by `repeats` gives every row back whole),
    and the rule that chose them, saying so."""
    if repeats == 1:
        return rows, rule
    return rows.repeat_interleave(repeats, dim=0), f"{rule}; {len(rows)} rows each repeated {repeats} times"


def ordinary_token_ids(tokenizer, limit: int = 5000) -> tuple[list[int], str]:
    """The ids the initial prompt is sampled from, and the rule that chose them (recorded in the run's result).

    SentencePiece and BPE vocabularies are ordered by frequency, so their first `limit` ordinary ids are the most
    frequent tokens (what the paper and Lester et al.'s code take). WordPiece vocabularies (BERT, MiniLM) are not:
    a fifth of their first 5,000 ids are single characters, many non-ASCII, and `##` continuation pieces; there
    the first `limit` whole words of two or more ASCII characters are taken. Special tokens, placeholders like
    `[unused7]` and ids that decode to nothing are skipped.
    """
    special = set(tokenizer.all_special_ids)
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    wordpiece = sum(token.startswith("##") for token in vocabulary if token) > len(vocabulary) // 20
    ids: list[int] = []
    for token_id, token in enumerate(vocabulary):
        if token_id in special or not token or is_placeholder(token) or (wordpiece and not _whole_ascii_word(token)):
            continue
        ids.append(token_id)
        if len(ids) == limit:
            break
    if wordpiece:
        return ids, (f"the first {len(ids):,} WordPiece whole words of 2+ ASCII characters (single characters, "
                     "## continuations and non-ASCII pieces skipped)")
    return ids, f"the first {len(ids):,} ordinary ids (the vocabulary's frequency order)"


def sample_vocabulary_rows(embeddings: nn.Module, candidate_ids: list[int], rows: int,
                           generator: torch.Generator) -> torch.Tensor:
    """`rows` input embeddings of distinct tokens drawn from `candidate_ids` (with replacement if too few), as the
    embedding module gives them to the model: Gemma's scales its table's rows by sqrt(d), so a prompt taken from
    the table itself would start 25 times smaller than the text beside it."""
    candidates = torch.tensor(candidate_ids)
    if rows <= len(candidates):
        picks = candidates[torch.randperm(len(candidates), generator=generator)[:rows]]
    else:
        picks = candidates[torch.randint(len(candidates), (rows,), generator=generator)]
    with torch.no_grad():
        return embeddings(picks.to(embeddings.weight.device)).float().clone()


def _whole_ascii_word(token: str) -> bool:
    return len(token) >= 2 and token.isascii() and not token.startswith("##")


def is_placeholder(token: str) -> bool:
    return (token.startswith("[") and token.endswith("]")) or (token.startswith("<") and token.endswith(">"))
