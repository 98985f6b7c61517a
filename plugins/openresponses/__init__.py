"""The ``openresponses`` plugin: ``POST /v1/responses`` and ``POST /v1/responses/compact``."""
