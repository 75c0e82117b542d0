"""A small BART (post-LN encoder-decoder) trained to denoise the stdlib source: text infilling
(Poisson(3) spans, 30% of tokens) and sentence (line) permutation.

    python train.py --config configs/bart_tiny.py --workdir workdirs/bart_tiny
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "bart-tiny"
    c.model_overrides.d_model = 128
    c.model_overrides.num_heads = 4
    c.model_overrides.d_ff = 512
    c.model_overrides.num_layers = 3
    c.model_overrides.num_decoder_layers = 3
    c.dataset = "stdlib"
    c.objective = "denoise"
    c.denoise_ratio = 0.3
    c.poisson_lambda = 3.0
    c.vocab_size = 2048
    c.max_length = 128
    c.per_device_batch_size = 16
    c.num_train_steps = 600
    c.schedule = "linear_rsqrt"
    c.learning_rate = 1e-3
    c.warmup_steps = 100
    c.log_every_steps = 20
    c.eval_every_steps = 200
    c.num_eval_batches = 16
    return c
