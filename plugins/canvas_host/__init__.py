"""The ``canvas_host`` plugin: serve an agent-written web folder, reloading open tabs on change."""
