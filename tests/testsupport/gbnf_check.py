"""Ask llama.cpp's own grammar sampler whether a GBNF grammar admits a string.

Only the model's vocabulary is loaded (``vocab_only``: milliseconds, no weights). A
string is fed token by token: each token must survive the grammar sampler (a token
the grammar forbids gets logit -inf) before it is accepted, and at the end the
end-of-generation token must be allowed, i.e. the string is a complete sentence.
"""

from __future__ import annotations

import ctypes
import functools
import math

import llama_cpp

from plugins.local_model.model_file import bundled_model_path


@functools.cache
def _vocab() -> tuple[llama_cpp.Llama, ctypes.c_void_p]:
    llm = llama_cpp.Llama(str(bundled_model_path()), vocab_only=True, verbose=False)
    return llm, llama_cpp.llama_model_get_vocab(llm.model)


def parses(gbnf: str) -> bool:
    """True when llama.cpp parses ``gbnf`` (root rule ``root``)."""
    _, vocab = _vocab()
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def _allowed(sampler: ctypes.c_void_p, token: int) -> bool:
    data = (llama_cpp.llama_token_data * 1)()
    data[0].id, data[0].logit, data[0].p = token, 0.0, 0.0
    array = llama_cpp.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
    return not math.isinf(data[0].logit)


def admits(gbnf: str, text: str) -> bool:
    """True when ``text`` is a complete sentence of ``gbnf``'s language."""
    llm, vocab = _vocab()
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    assert sampler, "llama.cpp could not parse the grammar"
    try:
        for token in llm.tokenize(text.encode("utf-8"), add_bos=False, special=False):
            if not _allowed(sampler, token):
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return _allowed(sampler, llama_cpp.llama_vocab_eos(vocab))
    finally:
        llama_cpp.llama_sampler_free(sampler)
