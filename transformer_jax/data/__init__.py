"""Data: local TFDS builders, sentencepiece, objectives, packing and the batch pipeline.

Entry point: `make_datasets(config, workdir)` -> (train BatchSource, eval BatchSource,
Tokenizer). See `pipeline.py` for the config fields it reads.
"""

from transformer_jax.data.builders import (
    CATALOG,
    CatalogSpec,
    DatasetNotPreparedError,
    catalog_builder,
    catalog_spec,
    parallel_text_builder,
    prepare,
    stdlib_builder,
    text_files_builder,
    text_files_splits,
)
from transformer_jax.data.corpus import split_by_hash, stdlib_files, stdlib_root, stdlib_split
from transformer_jax.data.objectives import SpecialIds
from transformer_jax.data.packing import Packer, pack_pairs, pack_sequences, unpack
from transformer_jax.data.pipeline import (
    LOCAL_DATASETS,
    OBJECTIVES,
    make_datasets,
    read_pairs,
    validate_config,
)
from transformer_jax.data.sources import BatchSource, unigram_entropy
from transformer_jax.data.synthetic import write_code_corpus, write_parallel_corpus
from transformer_jax.data.tokenizer import (
    MIN_VOCAB_SIZE,
    Tokenizer,
    get_or_train_tokenizer,
    train_tokenizer,
)

__all__ = [
    "CATALOG",
    "LOCAL_DATASETS",
    "MIN_VOCAB_SIZE",
    "OBJECTIVES",
    "BatchSource",
    "CatalogSpec",
    "DatasetNotPreparedError",
    "Packer",
    "SpecialIds",
    "Tokenizer",
    "catalog_builder",
    "catalog_spec",
    "get_or_train_tokenizer",
    "make_datasets",
    "pack_pairs",
    "pack_sequences",
    "parallel_text_builder",
    "prepare",
    "read_pairs",
    "split_by_hash",
    "stdlib_builder",
    "stdlib_files",
    "stdlib_root",
    "stdlib_split",
    "text_files_builder",
    "text_files_splits",
    "train_tokenizer",
    "unigram_entropy",
    "unpack",
    "validate_config",
    "write_code_corpus",
    "write_parallel_corpus",
]
