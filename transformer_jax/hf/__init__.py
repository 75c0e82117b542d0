"""Hugging Face checkpoints in and out (config.json + safetensors) for the families that have
an HF counterpart (GPT-2, BERT, BART):

    config, params = hf.load("path/to/hf_dir")   # float32 by default; dtype=None keeps bf16
    logits = models.build(config).apply({"params": params}, tokens)
    hf.save(config, params, "out_dir")           # transformers loads it as is
    tok = hf.load_tokenizer("path/to/hf_dir")    # encode / decode / special ids
    hf.save(config, params, "out_dir", tokenizer=tok, max_shard_size=2**30)

files.py    reading config.json and safetensors (single or sharded), writing them
table.py    name-table rows and the transforms between HF tensors and our parameters
strict.py   the config.json allowlist (unknown or unsupported fields are refused)
engine.py   applies a family's table: checks every tensor and parameter, both directions
api.py      load / save
tokenizer.py          load_tokenizer: tokenizer.json (tokenizers) or a sentencepiece model
special_tokens.py     the special ids named by tokenizer_config.json / config.json
own_format.py         configs HF cannot express, in this library's own format
generation.py         generation_defaults: the ids a checkpoint's generation config bans

Each family's mapping lives in its module (transformer_jax/families/NAME.py): HF_MODEL_TYPE,
HF_ARCHITECTURES, from_hf_config, to_hf_config, hf_name_table.
"""

from transformer_jax.hf.api import load, save
from transformer_jax.hf.generation import generation_defaults
from transformer_jax.hf.tokenizer import load_tokenizer

__all__ = ["generation_defaults", "load", "load_tokenizer", "save"]
