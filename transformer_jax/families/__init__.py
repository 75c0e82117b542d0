"""Model families: one small module each, collected here into one registry.

A family module holds what is particular to one family of published models and nothing the
shared modules do: its presets (named ModelConfigs whose parameter counts match the published
ones, and a `-tiny` one for tests and demos), later its Hugging Face name table. Shared code
(transformer_jax/nn, models.py) knows mechanisms, never family names.

To add a family: write `families/NAME.py` with a module docstring and `PRESETS: dict[str,
ModelConfig]`, and list the module in `_MODULES`.
"""

from __future__ import annotations

from types import ModuleType

from transformer_jax.config import ModelConfig
from transformer_jax.families import (
    albert,
    bart,
    bert,
    codegen,
    distilbert,
    falcon,
    gpt1,
    gpt2,
    gpt3,
    gpt_neo,
    llama,
    marian,
    mbart,
    mistral,
    mt5,
    plbart,
    roberta,
    starcoder,
    t5,
    transformer,
    xlnet,
)

# Order matters to hf.save: a config is saved as the first family whose config.json reads
# back as it (LLaMA before Mistral: a LLaMA config is also a Mistral one without a window;
# T5 before mT5, which hf.save writes as model_type t5; DistilBERT before BERT: a BERT
# config without token types reads back as BERT, but HF's BERT needs a token-type table;
# BART before PLBART, whose configs are BART's with scaled embeddings).
_MODULES: tuple[ModuleType, ...] = (
    gpt2, distilbert, bert, bart, transformer, t5, mt5, llama, mistral, falcon, codegen,
    starcoder, gpt1, gpt_neo, gpt3, roberta, albert, mbart, marian, plbart, xlnet,
)  # fmt: skip

FAMILIES: dict[str, ModuleType] = {m.__name__.rsplit(".", 1)[-1]: m for m in _MODULES}


def _collect() -> dict[str, ModelConfig]:
    presets: dict[str, ModelConfig] = {}
    for family, module in FAMILIES.items():
        for name, config in module.PRESETS.items():
            if name in presets:
                raise ValueError(f"Preset {name!r} of family {family!r} is defined twice.")
            presets[name] = config
    return presets


PRESETS: dict[str, ModelConfig] = _collect()
FAMILY_OF: dict[str, str] = {
    name: family for family, module in FAMILIES.items() for name in module.PRESETS
}

# Hugging Face model_type -> the family module that reads and writes its checkpoints
# (HF_MODEL_TYPE, HF_PREFIX, HF_ARCHITECTURES, HF_IGNORED_TENSORS, from_hf_config,
# to_hf_config, hf_name_table; see transformer_jax/hf).
HF_FAMILIES: dict[str, ModuleType] = {
    m.HF_MODEL_TYPE: m for m in _MODULES if hasattr(m, "HF_MODEL_TYPE")
}
