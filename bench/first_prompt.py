"""How good is a method's first prompt? Loss before any step, row norms and nearest-token similarity (issue 36).

    python -m bench.first_prompt [--model smollm2-135m] [--train-file ../shared/data/trec/train.csv] [--dtype fp32]

For each variant (the engine's PT and LAMP, and the levers of bench/ablations.py) it builds the run as `lamp train`
would, then, with no training step, prints the mean training loss of the first 64 training examples, the mean norm
of the fed rows beside the vocabulary's, and the mean cosine of each fed row with its nearest token embedding.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.ablations import with_levers
from lamp_engine.config import RunConfig
from lamp_engine.modules import FixedPrompt
from lamp_engine.train import Setup, build_model_and_method, load_splits

PAPER = {"pool_init": "rows", "residual": "dropped"}  # the paper's start, before LAMP's own (bench/ablations.py)
VARIANTS = {"pt": ("pt", {}, {}), "pt[length=25]": ("pt", {"length": 25}, {}), "lamp_p4": ("lamp", {}, {}),
            "lamp_p4[pool_init=rows,residual=dropped]": ("lamp", {}, PAPER),
            "lamp_p4[pool_init=rows,residual=dropped,q_init=paper]": ("lamp", {"q_init": "paper"}, PAPER),
            "lamp_p4[pool_init=rows,residual=dropped,prompt_scale=matched]":
                ("lamp", {}, PAPER | {"prompt_scale": "matched"}),
            "lamp_p4[residual=dropped]": ("lamp", {}, {"residual": "dropped"}),
            "lamp_p4[pool_init=rows]": ("lamp", {}, {"pool_init": "rows"})}
EXAMPLES, BATCH = 64, 8


def build(args: argparse.Namespace, method: str, settings: dict, levers: dict) -> Setup:
    values = {"model": args.model, "task": "custom", "train_file": args.train_file, "eval_file": args.eval_file,
              "method": method, "steps": 100, "batch_size": BATCH, "dtype": args.dtype, "device": "cpu",
              "seed": args.seed, **settings}
    config = with_levers(RunConfig.from_flat(values), levers)
    _, splits = load_splits(config)
    return build_model_and_method(config, splits, check_loaded=False)


def first_loss(setup: Setup, prompt: torch.nn.Module) -> float:
    with torch.no_grad():
        return statistics.fmean(setup.backbone.loss(prompt, setup.train[i:i + BATCH]).item()
                                for i in range(0, EXAMPLES, BATCH))


def row_facts(setup: Setup) -> tuple[float, float]:
    """The fed rows' mean norm and mean cosine with their nearest token embedding."""
    tokens = torch.nn.functional.normalize(setup.backbone.model.get_input_embeddings().weight.detach().float(), dim=1)
    with torch.no_grad():
        rows = setup.method().float()
    nearest = (torch.nn.functional.normalize(rows, dim=1) @ tokens.T).max(dim=1).values
    return rows.norm(dim=1).mean().item(), nearest.mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--train-file", default="../shared/data/trec/train.csv")
    parser.add_argument("--eval-file", default="../shared/data/trec/test.csv")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    print(f"| first prompt | loss, first {EXAMPLES} examples | fed rows | row norm | nearest-token cosine |\n"
          "|---|---:|---:|---:|---:|")
    for index, (name, spec) in enumerate(VARIANTS.items()):  # one model in memory at a time
        setup = build(args, *spec)
        if index == 0:
            tokens = setup.backbone.model.get_input_embeddings().weight.detach().float().norm(dim=1).mean().item()
            empty = FixedPrompt.empty(setup.backbone.hidden_size)
            print(f"| no prompt (token rows: mean norm {tokens:.2f}) | {first_loss(setup, empty):.2f} | 0 | | |")
        norm, cosine = row_facts(setup)
        print(f"| {name} | {first_loss(setup, setup.method):.2f} | {setup.method().shape[0]} | {norm:.2f} | "
              f"{cosine:.3f} |", flush=True)

if __name__ == "__main__":
    main()
