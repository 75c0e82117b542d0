"""The encoder families of issue 10 for make_fixtures.py: RoBERTa, DistilBERT, ALBERT, each
as its masked-LM class with padded inputs (run by make_fixtures.py, with torch + transformers).

Sizes differ on every axis from the other fixtures' and from each other's: roberta: vocab
301 (its byte-level BPE tokenizer, <mask> last), 39 position rows = 37 positions + the
pad_id + 1 = 2 reserved rows, one token type; distilbert: FFN 44, 33 positions, ReLU;
albert: embeddings E = 10 < D = 24, 3 depths of 1 shared layer, tanh-GELU, 2 token types;
albert_pretraining: AlbertForPreTraining (pooler, MLM and sentence-order heads), E = 14,
3 depths on 2 layer groups (depth i uses group floor(i * 2 / 3): 0, 0, 1), ReLU.
RoBERTa's rows are padded at the END (row 0) and at the START (row 1): positions that count
only real tokens differ from 0, 1, 2, ... only with padding in front.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

D, HEADS, FFN, VOCAB = 24, 3, 40, 99
ROBERTA_VOCAB, ROBERTA_PAD = 301, 1


def roberta_tokenizer(bpe):
    """A RoBERTa byte-level BPE tokenizer (<s> <pad> </s> <unk> first, <mask> added last);
    `bpe(vocab_size, specials)` trains one on make_fixtures.py's corpus."""
    vocab, merges = bpe(ROBERTA_VOCAB - 1, ["<s>", "<pad>", "</s>", "<unk>"])
    tok = transformers.RobertaTokenizerFast(vocab=vocab, merges=merges)
    assert len(tok) == ROBERTA_VOCAB and tok.mask_token_id == ROBERTA_VOCAB - 1, len(tok)
    assert tok.pad_token_id == ROBERTA_PAD
    return tok


ENCODERS = {
    "roberta": ("RobertaForMaskedLM", lambda: transformers.RobertaConfig(
        vocab_size=ROBERTA_VOCAB, hidden_size=D, num_hidden_layers=2, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=39, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=ROBERTA_PAD, bos_token_id=0, eos_token_id=2)),
    "distilbert": ("DistilBertForMaskedLM", lambda: transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=D, n_layers=2, n_heads=HEADS, hidden_dim=44,
        max_position_embeddings=33, activation="relu", pad_token_id=0)),
    "albert": ("AlbertForMaskedLM", lambda: transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=10, hidden_size=D, num_hidden_layers=3,
        num_hidden_groups=1, num_attention_heads=HEADS, intermediate_size=FFN,
        hidden_act="gelu_new", max_position_embeddings=37, type_vocab_size=2, pad_token_id=0)),
    "albert_pretraining": ("AlbertForPreTraining", lambda: transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=14, hidden_size=D, num_hidden_layers=3,
        num_hidden_groups=2, num_attention_heads=HEADS, intermediate_size=FFN,
        hidden_act="relu", max_position_embeddings=37, type_vocab_size=2, pad_token_id=0)),
}  # fmt: skip


def build(name):
    cls, config = ENCODERS[name]
    return getattr(transformers, cls)(config())


def run(name, model, ref_dir=None):
    """MLM logits of a padded batch [2, 10] (token types for ALBERT)."""
    rng = np.random.default_rng(11)
    vocab = model.config.vocab_size
    pad = model.config.pad_token_id
    ids = rng.integers(3, vocab, size=(2, 10)).astype(np.int64)
    ids[ids == pad] = 3
    mask = np.ones_like(ids)
    mask[0, 8:] = 0  # padding at the end
    if name == "roberta":
        mask[1, :3] = 0  # and at the start: RoBERTa's positions count real tokens only
    else:
        mask[1, 6:] = 0
    ids[mask == 0] = pad
    kw = {}
    out = {"input_ids": ids, "attention_mask": mask}
    if name.startswith("albert"):
        types = rng.integers(0, 2, size=ids.shape).astype(np.int64) * mask
        kw["token_type_ids"] = torch.tensor(types)
        out["token_type_ids"] = types
    with torch.no_grad():
        res = model(torch.tensor(ids), attention_mask=torch.tensor(mask), **kw)
    if name == "albert_pretraining":
        out.update(logits=res.prediction_logits.numpy(), sop_logits=res.sop_logits.numpy())
    else:
        out["logits"] = res.logits.numpy()
    return out
