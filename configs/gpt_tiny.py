"""Default recipe: a small GPT (pre-LN decoder) on the Python standard library's source.

    python train.py --config configs/gpt_tiny.py --workdir workdirs/gpt_tiny

About 3.5 minutes of training on 2 CPU cores (`make demo`: 1200 steps at ~11k tokens/s).
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "gpt-tiny"
    c.model_overrides.d_model = 128
    c.model_overrides.num_heads = 4
    c.model_overrides.d_ff = 512
    c.model_overrides.num_layers = 4
    c.model_overrides.dropout_rate = 0.0
    c.model_overrides.attention_dropout_rate = 0.0
    c.dataset = "stdlib"
    c.objective = "clm"
    c.vocab_size = 2048
    c.max_length = 128
    c.per_device_batch_size = 16
    c.eval_batch_size = 16
    c.num_train_steps = 1200
    c.schedule = "rsqrt"
    c.learning_rate = 0.5  # peak 0.5 * 128^-0.5 * 100^-0.5 = 4.4e-3 at step 100
    c.warmup_steps = 100
    c.weight_decay = 0.01
    c.log_every_steps = 20
    c.eval_every_steps = 400
    c.num_eval_batches = 16
    c.checkpoint_every_steps = 400
    return c
