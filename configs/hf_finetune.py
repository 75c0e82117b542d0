"""Fine-tune a Hugging Face checkpoint (config.json + safetensors + tokenizer) on local text:

    python train.py --config configs/hf_finetune.py --workdir workdirs/ft \
        --config.init_from=path/to/hf_dir --config.train_files='data/*.txt'

The model and its tokenizer come from init_from (no sentencepiece model is trained; `model`
and `vocab_size` are then unused); the objective must suit the model: clm for GPT-2
(the default), --config.objective=mlm for BERT, denoise for BART. Without init_from this
recipe trains the small default model from scratch. Export the result with
`python export.py --workdir workdirs/ft --out DIR`.
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.dataset = "text_files"
    c.train_files = "*.txt"
    c.objective = "clm"
    c.max_length = 128
    c.per_device_batch_size = 8
    c.eval_batch_size = 8
    c.num_train_steps = 500
    c.schedule = "constant"
    c.learning_rate = 5e-5  # fine-tuning: small and flat
    c.warmup_steps = 0
    c.weight_decay = 0.01
    return c
