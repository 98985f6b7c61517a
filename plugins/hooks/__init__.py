"""The ``hooks`` plugin: webhooks that wake the main session or start agent runs."""
