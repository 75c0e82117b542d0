"""The paper's base model on WMT'14 English->German (Vaswani et al. 2017, Table 3 "base").

    python train.py --config configs/transformer_base_wmt14.py --workdir workdirs/wmt14 \
        --config.data_dir=/path/to/tensorflow_datasets

Needs the prepared TFDS dataset `wmt14_translate/de-en` in data_dir (no download happens
here: run `tfds build wmt14_translate/de-en --data_dir DIR` on a machine with internet).
Hyperparameters as in the paper: N=6, d_model 512, d_ff 2048, 8 heads, dropout 0.1, label
smoothing 0.1, Adam(0.9, 0.98, 1e-9), lr = d_model^-0.5 min(step^-0.5, step warmup^-1.5) with
warmup 4000, a shared 37k sentencepiece vocabulary, ~25k source + 25k target tokens per batch:
8 devices x 64 rows of up to 64 tokens, ~25k real tokens per side after packing (real
sentence pairs average ~27 tokens, packed two-plus to a 64-token row). 100k steps.
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "transformer-base"
    c.dataset = "wmt14_translate/de-en"
    c.reverse_translation = True  # the catalog pair is de-en; the paper translates en -> de
    c.objective = "seq2seq"
    c.vocab_size = 37000
    c.max_length = 64
    c.per_device_batch_size = 64  # x 8 devices = 512 packed rows of 64 tokens per side
    c.eval_batch_size = 64
    c.num_train_steps = 100_000
    c.schedule = "rsqrt"
    c.learning_rate = 1.0
    c.warmup_steps = 4000
    c.label_smoothing = 0.1
    c.grad_clip_norm = 0.0  # the paper does not clip
    c.weight_decay = 0.0
    c.dtype = "bfloat16"
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.num_eval_batches = None
    c.bleu_sentences = 512  # sacrebleu BLEU/chrF at each eval (evaluate.py: all of newstest)
    c.checkpoint_every_steps = 2000
    return c
