"""A small XLNet (two-stream relative attention) trained with permutation language modelling
on the Python standard library's source: a random factorisation order per example, the last
1/K of it (K = plm_k = 6) predicted by the query stream.

    python train.py --config configs/xlnet_tiny.py --workdir workdirs/xlnet_tiny
    python sample.py --workdir workdirs/xlnet_tiny --prompt "def " --temperature 0

sample.py continues a prompt the XLNet way: each new token sits at a position no token sees
and the query stream predicts it (the whole stack is recomputed per token).
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "xlnet-tiny"
    c.model_overrides.d_model = 128
    c.model_overrides.num_heads = 4
    c.model_overrides.d_ff = 512
    c.model_overrides.num_layers = 4
    c.dataset = "stdlib"
    c.objective = "plm"
    c.plm_k = 6
    c.vocab_size = 2048
    c.max_length = 128
    c.per_device_batch_size = 16
    c.eval_batch_size = 16
    c.num_train_steps = 1200
    c.schedule = "linear_rsqrt"
    c.learning_rate = 1e-3
    c.warmup_steps = 100
    c.weight_decay = 0.01
    c.log_every_steps = 20
    c.eval_every_steps = 400
    c.num_eval_batches = 16
    c.checkpoint_every_steps = 400
    return c
