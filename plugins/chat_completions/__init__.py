"""The ``chat_completions`` plugin: OpenAI Chat Completions (the legacy surface) and ``/v1/models``."""
