"""Hugging Face checkpoints in and out (config.json + safetensors) for the families that have
an HF counterpart (GPT-2, BERT, BART):

    config, params = hf.load("path/to/hf_dir")   # float32 by default; dtype=None keeps bf16
    logits = models.build(config).apply({"params": params}, tokens)
    hf.save(config, params, "out_dir")           # transformers loads it as is

files.py    reading config.json and safetensors (single or sharded), writing them
table.py    name-table rows and the transforms between HF tensors and our parameters
strict.py   the config.json allowlist (unknown or unsupported fields are refused)
engine.py   applies a family's table: checks every tensor and parameter, both directions
api.py      load / save

Each family's mapping lives in its module (transformer_jax/families/NAME.py): HF_MODEL_TYPE,
HF_ARCHITECTURES, from_hf_config, to_hf_config, hf_name_table.
"""

from transformer_jax.hf.api import load, save

__all__ = ["load", "save"]
