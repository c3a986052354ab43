"""A byte-level BPE tokenizer of Llama 3's size, for grammar benchmarks without the real one.

The Llama 3.2 tokenizer cannot be downloaded here (gated, no network on the device). The
cost of a grammar mask depends on how many tokens the vocabulary has and how they split
text, so the bench builds a stand-in of the same shape: 128,000 regular tokens (the 256
byte symbols, every 2-character string of printable ASCII, then 3-character strings) and
256 special tokens at 128,000-128,255 with Llama 3's ids for BOS (128000), EOS (128001) and
pad (128004). Its words are not English, so the masks it gives are not the real
tokenizer's; the numbers it gives are an estimate of the grammar's cost, stated as such.
"""

from __future__ import annotations

import itertools


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what ByteLevel pre-tokenizers use)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def llama_sized_tokenizer(regular: int = 128_000, specials: int = 256):
    """A ``PreTrainedTokenizerFast`` with ``regular + specials`` tokens (see the module doc)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = _bytes_to_unicode()
    byte_syms = [table[b] for b in range(256)]
    alphabet = [table[b] for b in range(32, 127)]
    vocab = {sym: i for i, sym in enumerate(byte_syms)}
    merges: list[tuple[str, str]] = []
    pairs = ((a, b) for a, b in itertools.product(alphabet, alphabet))
    triples = ((a + b, c) for a, b, c in itertools.product(alphabet, alphabet, alphabet))
    for left, right in itertools.chain(pairs, triples):
        if len(vocab) >= regular:
            break
        vocab[left + right] = len(vocab)
        merges.append((left, right))
    names = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>"}
    special_tokens = [names.get(i, f"<|reserved_special_token_{i}|>") for i in range(specials)]
    for tok in special_tokens:
        vocab[tok] = len(vocab)
    model = models.BPE(vocab=vocab, merges=merges)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(special_tokens)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=special_tokens[0], eos_token=special_tokens[1],
                                   pad_token=special_tokens[4])
