"""A small BERT (post-LN encoder) trained with masked-language modelling on the stdlib source.

python train.py --config configs/bert_tiny.py --workdir workdirs/bert_tiny
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "bert-tiny"
    c.model_overrides.d_model = 128
    c.model_overrides.num_heads = 4
    c.model_overrides.d_ff = 512
    c.model_overrides.num_layers = 4
    c.dataset = "stdlib"
    c.objective = "mlm"  # "mlm_nsp" adds next-sentence prediction (the preset has 2 labels)
    c.vocab_size = 2048
    c.max_length = 128
    c.per_device_batch_size = 16
    c.num_train_steps = 600
    c.schedule = "linear_rsqrt"
    c.learning_rate = 1e-3
    c.warmup_steps = 100
    c.weight_decay = 0.01
    c.log_every_steps = 20
    c.eval_every_steps = 200
    c.num_eval_batches = 16
    return c
