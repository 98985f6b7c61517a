"""The web console: sign in, overview, playground, responses, live runs and usage at ``/console/``."""
