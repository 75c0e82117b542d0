"""The XLNet fixture of issue 17 (XLNetLMHeadModel), built by make_fixtures.py (torch +
transformers only): a seeded random model (every tensor randomised by make_fixtures.randomise)
with vocab 99, width 24, 3 heads of 8, FFN 40, 2 layers and clamp_len 5 (shorter than the
11-token rows, so clamping is exercised).

reference.npz holds, for a batch of 2 rows of 11 tokens (row 1 padded on the LEFT with 3 pads,
as XLNet's tokenizer pads) with token types 0 / 1 / 2 (XLNet's segments, <cls> = 2):
  * `logits`: content-stream logits [2, 11, 99] (attention_mask given);
  * `plm_*`: a random factorisation order per row over its real tokens, the last 4 of it
    predicted: `plm_perm_mask` [2, 11, 11], `plm_target_mapping` [2, 4, 11] (targets in
    order of their position) and HF's query-stream `plm_logits` [2, 4, 99];
  * `gen_*`: HF's greedy tokens, `generate(..., use_mems=False)`, for prompts of 5 and 7
    tokens each generated alone (checked equal to a loop of full forward passes that appends a
    position no token sees and predicts it with the query stream).
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

VOCAB, D, HEADS, FFN, LAYERS, CLAMP = 99, 24, 3, 40, 2, 5
PAD, EOS = 5, VOCAB - 1  # EOS: an id outside the prompts, so that rows may run to the end
LENGTH, LEFT_PAD, NUM_PREDICT = 11, 3, 4
GEN_LENGTHS, GEN_NEW = (5, 7), 8

XLNET = {
    "xlnet": ("XLNetLMHeadModel", lambda: transformers.XLNetConfig(
        vocab_size=VOCAB, d_model=D, n_layer=LAYERS, n_head=HEADS, d_inner=FFN,
        ff_activation="gelu", clamp_len=CLAMP, pad_token_id=PAD, bos_token_id=1,
        eos_token_id=EOS)),
}  # fmt: skip
SEEDS = {"xlnet": 177}


def build(name):
    return getattr(transformers, XLNET[name][0])(XLNET[name][1]())


def plm_masks(order: np.ndarray, real: np.ndarray, num_predict: int):
    """XLNet's masks for one row from a factorisation order over its real positions:
    the last `num_predict` of the order are targets; perm_mask[i, j] = 1 (i may not see j)
    when j is a target not earlier in the order than i (non-targets rank before every
    target). -> perm_mask [T, T], target_mapping [P, T] (targets by position)."""
    length = real.shape[0]
    rank = np.full(length, -1)
    rank[order] = np.arange(len(order))
    targets = np.zeros(length, bool)
    targets[order[len(order) - num_predict :]] = True
    eff = np.where(targets, rank, -1)
    perm = (targets[None, :] & (eff[None, :] >= eff[:, None])).astype(np.float32)
    mapping = np.eye(length, dtype=np.float32)[np.flatnonzero(targets)]
    return perm, mapping


def run(name, model, ref_dir=None):
    rng = np.random.default_rng(17)
    ids = rng.integers(6, VOCAB - 1, size=(2, LENGTH)).astype(np.int64)
    mask = np.ones_like(ids)
    ids[1, :LEFT_PAD], mask[1, :LEFT_PAD] = PAD, 0
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    types[:, -1] = 2  # XLNet's <cls> segment
    perms, mappings = [], []
    for row in range(2):
        real = mask[row].astype(bool)
        order = rng.permutation(np.flatnonzero(real))
        perm, mapping = plm_masks(order, real, NUM_PREDICT)
        perms.append(perm)
        mappings.append(mapping)
    perm_mask, target_mapping = np.stack(perms), np.stack(mappings)
    t = torch.tensor
    with torch.no_grad():
        logits = model(t(ids), attention_mask=t(mask), token_type_ids=t(types)).logits.numpy()
        plm_logits = model(
            t(ids),
            attention_mask=t(mask),
            token_type_ids=t(types),
            perm_mask=t(perm_mask),
            target_mapping=t(target_mapping),
        ).logits.numpy()
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "logits": logits,
           "plm_perm_mask": perm_mask, "plm_target_mapping": target_mapping,
           "plm_logits": plm_logits}  # fmt: skip
    if ref_dir is not None:
        return out
    prompts = np.full((len(GEN_LENGTHS), max(GEN_LENGTHS)), PAD, np.int64)
    generated = np.full((len(GEN_LENGTHS), GEN_NEW), EOS, np.int64)
    for row, length in enumerate(GEN_LENGTHS):
        prompt = rng.integers(6, VOCAB - 1, size=(1, length)).astype(np.int64)
        gen = model.generate(
            t(prompt), max_new_tokens=GEN_NEW, do_sample=False, num_beams=1, use_mems=False,
            pad_token_id=PAD, eos_token_id=EOS,
        ).numpy()[0, length:]  # fmt: skip
        seq = t(prompt)
        with torch.no_grad():  # the XLNet way, by hand: a hidden position, the query stream
            for _ in range(len(gen)):
                n = seq.shape[1] + 1
                inp = torch.cat([seq, torch.zeros((1, 1), dtype=torch.long)], 1)
                perm = torch.zeros((1, n, n))
                perm[:, :, -1] = 1.0
                mapping = torch.zeros((1, 1, n))
                mapping[0, 0, -1] = 1.0
                out_logits = model(inp, perm_mask=perm, target_mapping=mapping, use_mems=False)
                seq = torch.cat([seq, out_logits.logits[:, -1].argmax(-1)[:, None]], 1)
        assert np.array_equal(seq.numpy()[0, length:], gen), f"{name}: generate != recompute"
        prompts[row, :length] = prompt[0]
        generated[row, : len(gen)] = gen
    out.update(
        gen_prompts=prompts,
        gen_lengths=np.array(GEN_LENGTHS),
        gen_tokens=generated,
        gen_eos_id=EOS,
    )
    return out


TOKENIZER_CONFIG = {  # as xlnet-base-cased ships it (its special tokens; padding on the left)
    "tokenizer_class": "XLNetTokenizer", "do_lower_case": False, "remove_space": True,
    "keep_accents": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
    "sep_token": "<sep>", "pad_token": "<pad>", "cls_token": "<cls>", "mask_token": "<mask>",
    "additional_special_tokens": ["<eop>", "<eod>"], "padding_side": "left",
}  # fmt: skip


def make_tokenizer(out_dir, corpus):
    """An XLNet-style spiece.model (unigram; <unk> <s> </s> <cls> <sep> <pad> <mask> <eod>
    <eop> at ids 0-8, as XLNet's) and tokenizer_config.json in `out_dir`; returns
    transformers' tokenizer of that directory (its ids are the reference)."""
    import io
    import json
    import os

    import sentencepiece as spm

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=proto, vocab_size=VOCAB, model_type="unigram",
        minloglevel=2, unk_id=0, bos_id=1, eos_id=2, pad_id=5,
        control_symbols=["<cls>", "<sep>", "<mask>", "<eod>", "<eop>"], hard_vocab_limit=False,
    )  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "spiece.model"), "wb") as f:
        f.write(proto.getvalue())
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
    return transformers.AutoTokenizer.from_pretrained(out_dir)
