"""A word-level CLIP tokenizer for the shapes grammar: every caption word is one token, any other text still
tokenizes (into byte-level characters)."""

from __future__ import annotations

from collections import Counter

from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer

from rnri.shapes.world import vocabulary

MAX_LENGTH = 32  # tokens the text encoder takes, start and end included; the longest caption needs 17
END = "</w>"  # CLIP's end-of-word suffix


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that turn each of ``words`` into one token (Sennrich et al. 2016, learnt on ``words``).

    Merges are learnt greedily by pair frequency (ties broken by the pair itself), so applying them in order to a
    word of the list rebuilds it exactly, which is what BPE encoding does.
    """
    pieces = {word: [*word[:-1], word[-1] + END] for word in words}
    merges = []
    while True:
        pairs = Counter(pair for parts in pieces.values() for pair in zip(parts, parts[1:]))
        if not pairs:
            return merges
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word, parts in pieces.items():
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            pieces[word] = merged


def shapes_tokenizer() -> CLIPTokenizer:
    """The tokenizer: byte-level characters (alone and as word ends), then every merge product, then the specials."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = learn_merges(vocabulary())
    tokens = alphabet + [c + END for c in alphabet]
    tokens += [a + b for a, b in merges if a + b not in tokens]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tokenizer.model_max_length = MAX_LENGTH
    return tokenizer
