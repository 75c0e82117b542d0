"""Sampling from the models: a `lax.while_loop` sampler (greedy / temperature / top-k /
top-p) and beam search over a KV cache, plus masked-token filling for encoder-only models.

    tokens, lengths = generate(model, params, prompts, rng, max_new_tokens=32, top_p=0.9)
    tokens, lengths, scores = beam_search(model, params, sources, beam_size=4,
                                          max_new_tokens=32, eos_id=2, bos_id=2)
    predictions = fill_mask(model, params, tokens, mask_id=103, top_k=5)

`sample_loop` / `beam_search_loop` are the model-free loops (driven by a
`tokens_to_logits(tokens, positions, cache)` function); see generate.py for what recompiles.
"""

from transformer_jax.sampling.beam import BeamState, beam_search_loop, length_penalty
from transformer_jax.sampling.fill_mask import MaskPrediction, fill_mask
from transformer_jax.sampling.generate import beam_search, cast_weights, generate
from transformer_jax.sampling.loop import SamplingState, sample_loop
from transformer_jax.sampling.model_fns import decoder_only_fns, encoder_decoder_fns
from transformer_jax.sampling.settings import SamplingSettings

__all__ = [
    "BeamState",
    "MaskPrediction",
    "SamplingSettings",
    "SamplingState",
    "beam_search",
    "beam_search_loop",
    "cast_weights",
    "decoder_only_fns",
    "encoder_decoder_fns",
    "fill_mask",
    "generate",
    "length_penalty",
    "sample_loop",
]
