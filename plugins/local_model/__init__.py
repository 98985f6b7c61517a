"""The ``local_model`` provider: a small GGUF model embedded in the gateway, offline."""
