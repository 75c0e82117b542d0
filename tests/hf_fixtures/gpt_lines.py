"""Fixtures of issue 17's decoders (GPT-1 and GPT-Neo), run by make_fixtures.py as its CAUSAL
fixtures: logits of a right-padded batch and HF's greedy tokens for ragged prompts.

openai_gpt: post-LN, no final norm, HF's "gelu" (the tanh form), fused Conv1D c_attn; the
FFN is HF's fixed 4 * n_embd. gpt_neo: 3 layers "local, global, local" with a window of 3
(shorter than the 11-token batch and the 5 + 8 / 7 + 8 generated sequences), no q/k/v biases,
unscaled scores, FFN 40 (!= 4 * 24).
"""

from __future__ import annotations

import transformers

VOCAB, D, HEADS, FFN, POS = 99, 24, 3, 40, 37  # as make_fixtures.py

CAUSAL = {
    "openai_gpt": ("OpenAIGPTLMHeadModel", lambda: transformers.OpenAIGPTConfig(
        vocab_size=VOCAB, n_positions=POS, n_embd=D, n_layer=2, n_head=HEADS, afn="gelu",
        eos_token_id=1)),  # GPT-1 has no EOS: an id that greedy decoding does not reach
    "gpt_neo": ("GPTNeoForCausalLM", lambda: transformers.GPTNeoConfig(
        vocab_size=VOCAB, max_position_embeddings=POS, hidden_size=D, num_layers=3,
        num_heads=HEADS, attention_types=[[["local", "global", "local"], 1]], window_size=3,
        intermediate_size=FFN, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)),
}  # fmt: skip
SEEDS = {"openai_gpt": 174, "gpt_neo": 172}  # issue 17 (174: greedy tokens vary; 171 repeats)
