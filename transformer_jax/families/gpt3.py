"""GPT-3 (Brown et al. 2020, Table 2.1): GPT-2's layout (families/gpt2.py: pre-LN with a final
norm, learned positions, tanh-GELU, biases, tied output) with 2,048 positions and the GPT-2
vocabulary of 50,257. Counts are HF `GPT2LMHeadModel` at these sizes (hf.save writes them as
gpt2 checkpoints).

| preset      | params          | d_model | layers | heads x head size |
|-------------|-----------------|---------|--------|-------------------|
| gpt3-small  | 125,226,240     | 768     | 12     | 12 x 64           |
| gpt3-medium | 355,871,744     | 1,024   | 24     | 16 x 64           |
| gpt3-large  | 760,300,032     | 1,536   | 24     | 16 x 96           |
| gpt3-2.7b   | 2,651,553,280   | 2,560   | 32     | 32 x 80           |
| gpt3-6.7b   | 6,658,404,352   | 4,096   | 32     | 32 x 128          |
| gpt3-175b   | 174,604,259,328 | 12,288  | 96     | 96 x 128          |
| gpt3-tiny   | (tests/demos)   | 64      | 2      | 4 x 16            |

`gpt3-tiny` is the one preset with the alternating pattern on (layer 0 dense, layer 1 local
with a window of 4), as a demonstration of the recipe below.

The table's XL (d_model 2,048, 24 heads of 128) and 13B (d_model 5,140, 40 heads of 128) rows
are not self-consistent (heads x head size != d_model) and are left out: GPT-2's layout (and
HF's class) has no separate head size, and either reading of those rows would be a guess.

The paper alternates dense and locally banded attention between layers but gives no band
width, so these presets are dense. To turn the pattern on (as GPT-Neo, families/gpt_neo.py):

    from transformer_jax.families.gpt_neo import alternating
    cfg = presets.get("gpt3-small")
    cfg = cfg.replace(attention={"pattern": alternating(cfg.num_layers), "window": 256})

(layer 0 dense, layer 1 local with query q seeing keys q - 256 < k <= q, and so on). Such a
config has no HF class (GPT-2 has no local layers, GPT-Neo no q/k/v biases and no score
scale): save it with `hf.save(..., format="own")`.
"""

from __future__ import annotations

from transformer_jax.config import ModelConfig
from transformer_jax.families.gpt2 import gpt2
from transformer_jax.families.gpt_neo import alternating
from transformer_jax.families.tiny import TINY


def gpt3(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    """GPT-2's layout at GPT-3's context length (2,048); dense attention in every layer."""
    return gpt2(d_model, num_layers, num_heads).replace(max_len=2048)


PRESETS: dict[str, ModelConfig] = {
    "gpt3-small": gpt3(768, 12, 12),
    "gpt3-medium": gpt3(1024, 24, 16),
    "gpt3-large": gpt3(1536, 24, 16),
    "gpt3-2.7b": gpt3(2560, 32, 32),
    "gpt3-6.7b": gpt3(4096, 32, 32),
    "gpt3-175b": gpt3(12288, 96, 96),
    "gpt3-tiny": gpt3(64, 2, 4).override(
        {
            **TINY,
            "dropout_rate": 0.0,
            "attention.dropout_rate": 0.0,
            "attention.pattern": alternating(2),
            "attention.window": 4,
        }
    ),
}
