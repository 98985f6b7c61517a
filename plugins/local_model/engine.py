"""The blocking side: one llama.cpp model, its chat template, and a token loop.

Everything here runs in the provider's single worker thread: the ``Llama`` object is
not thread-safe, so exactly one thread ever touches it. The loop checks a
``threading.Event`` between tokens, so a cancelled run stops within one token.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import llama_cpp
from llama_cpp import Llama, LlamaGrammar
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from plugins.local_model.prompt import ChatMessage, PromptParts

log = logging.getLogger("plugins.local_model")

# Used only when neither the GGUF nor the options carry a chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

GenFinish = Literal["stop", "length", "cancelled"]


class ContextOverflow(Exception):
    """The current input alone does not fit the context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        super().__init__(f"the input needs {prompt_tokens} tokens but the model's context window is {n_ctx}")
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


class InvalidGrammar(Exception):
    """llama.cpp rejected a grammar (checked before use: a bad grammar would crash it)."""


@dataclass(slots=True)
class Sampling:
    """Sampling settings for one generation."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None
    seed: int | None = None
    repeat_penalty: float = 1.0
    # OpenAI-style penalties (-2..2); 0 is off, llama.cpp's own default.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(slots=True)
class Generation:
    """What one generation produced."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: GenFinish
    first_token_seconds: float | None = None
    seconds: float = 0.0


@dataclass(slots=True)
class EngineConfig:
    """How to load the model."""

    path: Path
    n_ctx: int
    n_threads: int
    chat_template: str | None = None
    cpu_weight_layouts: bool = False


# Llama() builds its model parameters from this module-level factory and exposes no
# argument for `use_extra_bufts`, so construction swaps the factory under a lock.
_PARAMS_LOCK = threading.Lock()


def _new_llama(cfg: EngineConfig) -> Llama:
    import llama_cpp.llama as llama_module

    bindings = llama_module.llama_cpp
    default_params = bindings.llama_model_default_params

    def params() -> llama_cpp.llama_model_params:
        value = default_params()
        if hasattr(value, "use_extra_bufts"):  # older bindings have no such field
            value.use_extra_bufts = cfg.cpu_weight_layouts
        return value

    with _PARAMS_LOCK:
        bindings.llama_model_default_params = params
        try:
            return Llama(model_path=str(cfg.path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                         n_threads_batch=cfg.n_threads, verbose=False)
        finally:
            bindings.llama_model_default_params = default_params


class Engine:
    """A loaded GGUF model. Call every method from one thread at a time."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.llm: Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._vocab: object | None = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self.llm is not None

    def load(self) -> None:
        """Load the model (blocking; about a second for the bundled 135M model)."""
        if self.llm is not None:
            return
        started = time.perf_counter()
        cfg = self.config
        # Said before the work: a big GGUF on a slow disk can take a while, and a log that
        # only speaks once loading is done leaves a start-up looking hung.
        log.info("loading %s ...", cfg.path)
        llm = _new_llama(cfg)
        template = cfg.chat_template or llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=_token_text(llm, llm.token_eos()),
            bos_token=_token_text(llm, llm.token_bos()),
        )
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.llm = llm
        # The first decode pages the weights in and sets up compute buffers (seconds on
        # a busy machine); pay that here, not in the first user's time to first token.
        self.generate(self.render([{"role": "user", "content": "Hi"}]), Sampling(max_tokens=1, temperature=0, top_p=1),
                      lambda _: None, threading.Event())
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s in %.2fs (n_ctx=%d, threads=%d)", cfg.path.name, self.load_seconds, cfg.n_ctx,
                 cfg.n_threads)

    def close(self) -> None:
        """Free the model's memory."""
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()

    # ------------------------------------------------------------------ prompts

    def render(self, messages: list[ChatMessage]) -> list[int]:
        """The prompt tokens for ``messages`` under the model's chat template."""
        llm, fmt = self._require()
        prompt = fmt(messages=messages).prompt
        # The template writes any BOS itself, as llama-cpp-python's own chat handlers assume.
        return llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def fit(self, parts: PromptParts, reserve: int) -> list[int]:
        """Prompt tokens for ``parts``, dropping the oldest history until ``reserve``
        tokens of answer fit the context window. Raises :class:`ContextOverflow` when
        even the current input alone does not fit."""
        n_ctx = self.config.n_ctx
        while True:
            tokens = self.render(parts.messages())
            if len(tokens) + reserve <= n_ctx:
                return tokens
            if not parts.history:
                if len(tokens) < n_ctx:
                    return tokens  # the answer gets whatever room is left
                raise ContextOverflow(len(tokens), n_ctx)
            # Drop from the oldest end; a big history is trimmed in chunks to stay cheap.
            del parts.history[: max(1, len(parts.history) // 8)]

    # ------------------------------------------------------------------ generation

    def check_grammar(self, grammar: str) -> None:
        """Raise :class:`InvalidGrammar` unless llama.cpp parses ``grammar``.

        llama.cpp crashes the process when sampling with a grammar it failed to parse,
        so every grammar is parsed once here first.
        """
        self._require()
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise InvalidGrammar("llama.cpp could not parse the generated grammar")
        llama_cpp.llama_sampler_free(sampler)

    def generate(self, tokens: list[int], sampling: Sampling, on_text: Callable[[str], None],
                 cancelled: threading.Event) -> Generation:
        """Generate after ``tokens``, calling ``on_text`` with each new piece of text.

        Stops at an end-of-generation token (``stop``), after ``max_tokens`` tokens or
        when the context is full (``length``), at a stop string (``stop``, the stop
        string itself is not sent), or when ``cancelled`` is set (``cancelled``).
        """
        llm, _ = self._require()
        started = time.perf_counter()
        grammar = None
        if sampling.grammar is not None:
            self.check_grammar(sampling.grammar)
            grammar = LlamaGrammar.from_string(sampling.grammar, verbose=False)
        if sampling.seed is not None:
            llm.set_seed(sampling.seed)
        budget = max(0, min(sampling.max_tokens, self.config.n_ctx - len(tokens)))
        out = StopFilter(sampling.stop, on_text)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        count = 0
        first: float | None = None
        finish: GenFinish = "length"
        if budget and not cancelled.is_set():
            for token in llm.generate(tokens, temp=sampling.temperature, top_p=sampling.top_p,
                                      repeat_penalty=sampling.repeat_penalty,
                                      presence_penalty=sampling.presence_penalty,
                                      frequency_penalty=sampling.frequency_penalty, grammar=grammar):
                if cancelled.is_set():
                    finish = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                count += 1
                if first is None:
                    first = time.perf_counter() - started
                if out.feed(decoder.decode(llm.detokenize([token]))):
                    finish = "stop"
                    break
                if count >= budget:
                    break
        elif cancelled.is_set():
            finish = "cancelled"
        if finish != "cancelled":
            out.feed(decoder.decode(b"", final=True))
            out.flush()
        return Generation(text=out.text, prompt_tokens=len(tokens), completion_tokens=count, finish_reason=finish,
                          first_token_seconds=first, seconds=time.perf_counter() - started)

    def _require(self) -> tuple[Llama, Jinja2ChatFormatter]:
        if self.llm is None or self._formatter is None:
            raise RuntimeError("the model is not loaded")
        return self.llm, self._formatter


def _token_text(llm: Llama, token: int) -> str:
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace")


class StopFilter:
    """Passes text on as it comes, holding back what might be the start of a stop string."""

    def __init__(self, stops: list[str], sink: Callable[[str], None]) -> None:
        self.stops = [s for s in stops if s]
        self.sink = sink
        self.held = ""
        self.text = ""
        self.stopped = False

    def feed(self, piece: str) -> bool:
        """Add text; True when a stop string was reached (text before it is sent)."""
        if self.stopped or not piece:
            return self.stopped
        if not self.stops:
            self._send(piece)
            return False
        self.held += piece
        hits = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._send(self.held[: min(hits)])
            self.held = ""
            self.stopped = True
            return True
        keep = max((_overlap(self.held, s) for s in self.stops), default=0)
        self._send(self.held[: len(self.held) - keep])
        self.held = self.held[len(self.held) - keep:]
        return False

    def flush(self) -> None:
        """Send anything still held back (the answer ended without a stop string)."""
        if not self.stopped:
            self._send(self.held)
        self.held = ""

    def _send(self, text: str) -> None:
        if text:
            self.text += text
            self.sink(text)


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
