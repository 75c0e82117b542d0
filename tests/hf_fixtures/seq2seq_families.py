"""Fixtures of the BART-like encoder-decoder families of issue 10 (mBART, Marian, PLBART),
built by make_fixtures.py (imported there; torch + transformers only).

Each is a small seeded random model (every tensor randomised by make_fixtures.randomise,
Marian's fixed sinusoidal tables then recomputed as HF does, since it neither saves nor reads
them) with distinct sizes per axis: vocab 89, width 24, 3 heads of 8, FFN 40, 37 positions,
2 encoder and 3 decoder layers. reference.npz holds padded sources and padded targets (with
their masks), HF's float32 logits, and HF's greedy and beam tokens (pad never generated).
Marian's decoder starts with the pad id itself (88); mBART's and PLBART's with </s> (2).

Marian's generation_config.json bans the pad id as the published opus-mt ones do
(`bad_words_ids: [[pad]]`), so HF's generate needs no extra setting there; mBART and PLBART
ban nothing by default, and get `suppress_tokens=[pad]` (our sampler never emits the pad).
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

VOCAB, D, HEADS, FFN, POS = 89, 24, 3, 40, 37

_COMMON = dict(
    vocab_size=VOCAB, d_model=D, encoder_layers=2, decoder_layers=3,
    encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
    decoder_ffn_dim=FFN, max_position_embeddings=POS, scale_embedding=True,
    forced_eos_token_id=None,
)  # fmt: skip
# name -> (class, config, ids: pad, eos, decoder start)
ENCDEC = {
    "mbart": ("MBartForConditionalGeneration", lambda: transformers.MBartConfig(
        **_COMMON, activation_function="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2)),
    "marian": ("MarianMTModel", lambda: transformers.MarianConfig(
        **_COMMON, activation_function="swish", pad_token_id=VOCAB - 1, eos_token_id=0,
        decoder_start_token_id=VOCAB - 1, share_encoder_decoder_embeddings=True)),
    "plbart": ("PLBartForConditionalGeneration", lambda: transformers.PLBartConfig(
        **_COMMON, activation_function="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2)),
}  # fmt: skip
IDS = {"mbart": (1, 2, 2), "marian": (VOCAB - 1, 0, VOCAB - 1), "plbart": (1, 2, 2)}


def build(name):
    model = getattr(transformers, ENCDEC[name][0])(ENCDEC[name][1]())
    if name == "marian":  # Helsinki-NLP/opus-mt-*'s generation_config.json: the pad is banned
        model.generation_config.bad_words_ids = [[IDS[name][0]]]
    return model


def _fix_sinusoidal(model):
    """Marian's position tables are computed, not stored: undo the randomisation."""
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    for module in model.modules():
        if isinstance(module, MarianSinusoidalPositionalEmbedding):
            with torch.no_grad():
                module.weight.copy_(module.create_weight())


def run(name, model, ref_dir=None):
    """Right-padded sources (row 1: 6 of 9 real) and targets (row 1: 5 of 7 real, pad ids
    after), both masks given to HF; greedy and 3-beam generation (length_penalty 0, never
    stopping early) with the pad id suppressed (our sampler never emits it)."""
    _fix_sinusoidal(model)
    pad, eos, start = IDS[name]
    rng = np.random.default_rng(11)
    src = rng.integers(3, VOCAB - 1, size=(2, 9)).astype(np.int64)
    mask = np.ones_like(src)
    src[1, 6:], mask[1, 6:] = pad, 0
    tgt = rng.integers(3, VOCAB - 1, size=(2, 7)).astype(np.int64)
    tgt[:, 0] = start
    tgt_mask = np.ones_like(tgt)
    tgt[1, 5:], tgt_mask[1, 5:] = pad, 0
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor(src),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(tgt),
            decoder_attention_mask=torch.tensor(tgt_mask),
        ).logits.numpy()
    out = {"input_ids": src, "attention_mask": mask, "decoder_input_ids": tgt,
           "decoder_attention_mask": tgt_mask, "logits": logits}  # fmt: skip
    if ref_dir is None:
        common = dict(
            attention_mask=torch.tensor(mask), max_new_tokens=8, do_sample=False,
            decoder_start_token_id=start, eos_token_id=eos, pad_token_id=pad,
            forced_bos_token_id=None, forced_eos_token_id=None, min_length=0,
            no_repeat_ngram_size=0,
        )  # fmt: skip
        if [pad] not in (model.generation_config.bad_words_ids or []):  # HF bans nothing
            common["suppress_tokens"] = [pad]
        with torch.no_grad():
            gen = model.generate(torch.tensor(src), num_beams=1, **common).numpy()
            beam = model.generate(
                torch.tensor(src), num_beams=3, length_penalty=0.0, early_stopping="never",
                **common,
            ).numpy()  # fmt: skip
        out.update(gen_tokens=gen[:, 1:], beam_tokens=beam[:, 1:], beam_size=3,
                   gen_start_id=start, gen_eos_id=eos, gen_pad_id=pad)  # fmt: skip
    return out
