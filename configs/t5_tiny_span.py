"""A small T5 (v1.0 wiring: relative position bias, pre-RMSNorm, no biases) pre-trained with
T5's span corruption (15% of tokens in spans of mean length 3, sentinel targets) on the
stdlib source; the model's vocabulary is the tokenizer's 2048 ids + 100 sentinels.

    python train.py --config configs/t5_tiny_span.py --workdir workdirs/t5_tiny_span
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "t5-tiny"
    c.model_overrides.d_model = 128
    c.model_overrides.d_ff = 512
    c.model_overrides.num_layers = 3
    c.model_overrides.num_decoder_layers = 3
    c.model_overrides.output = {"scale": 128**-0.5}  # v1.0 tied output: d_model^-0.5
    c.dataset = "stdlib"
    c.objective = "span_corruption"
    c.noise_density = 0.15
    c.mean_noise_span_length = 3.0
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
