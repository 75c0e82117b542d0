"""The size every family's `-tiny` preset shares (tests and demos), as overrides."""

TINY = {
    "vocab_size": 512,
    "d_model": 64,
    "attention.num_heads": 4,
    "ffn.d_ff": 128,
    "num_layers": 2,
    "max_len": 128,
}
