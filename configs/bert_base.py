"""BERT-base pretraining: masked-language modelling (15%, 80/10/10) + next-sentence
prediction, on LM1B sentences (BERT used BooksCorpus + Wikipedia, which TFDS does not ship as
sentence pairs; point `dataset`/`train_files` at your own text to match it).

    python train.py --config configs/bert_base.py --workdir workdirs/bert_base \
        --config.data_dir=/path/to/tensorflow_datasets
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "bert-base"
    c.dataset = "lm1b"
    c.objective = "mlm_nsp"
    c.vocab_size = 30522
    c.max_length = 128
    c.per_device_batch_size = 32  # x 8 devices = 256 sequences, as in the BERT paper
    c.eval_batch_size = 32
    c.num_train_steps = 1_000_000
    c.schedule = "linear_rsqrt"
    c.learning_rate = 1e-4
    c.warmup_steps = 10_000
    c.b2 = 0.999
    c.eps = 1e-6
    c.weight_decay = 0.01
    c.dtype = "bfloat16"
    c.log_every_steps = 100
    c.eval_every_steps = 10_000
    c.num_eval_batches = 50
    c.checkpoint_every_steps = 10_000
    return c
