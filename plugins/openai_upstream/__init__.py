"""Provider plugin: any OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM ...)."""
