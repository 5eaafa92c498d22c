"""What a valid text to classify is, decided in one place for the Python API, ``classify``
and the server: a string with something besides white space, valid Unicode (no unpaired
surrogate, which cannot be encoded), and without a special token of the tokenizer inside
(``<|endoftext|>`` would be read as a marker, not as text)."""

from __future__ import annotations

from collections.abc import Iterable


def text_problem(text: str, special_tokens: Iterable[str] = ()) -> str | None:
    """Why the string ``text`` cannot be classified (a phrase to follow ``texts[i]``), or
    None when it can."""
    if not text.strip():
        return "is empty or only white space; give some text to classify"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate such as "\ud800"
        return f"has an unpaired surrogate at character {err.start + 1}: not valid Unicode text"
    for token in special_tokens:
        if token in text:
            return (
                f"contains {token!r}, a special token the tokenizer does not accept inside a text"
            )
    return None


def check_texts(texts, special_tokens: Iterable[str] = ()) -> list[str]:
    """``texts`` as a list of valid strings, or an error naming the first one that is not
    (``TypeError`` for what is not a string, ``ValueError`` for a string ``text_problem``
    refuses). A bare string is refused: it would be classified character by character."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, not one string: use [text]")
    texts, special = list(texts), tuple(special_tokens)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__} ({text!r:.40}), not a string")
        problem = text_problem(text, special)
        if problem is not None:
            raise ValueError(f"texts[{i}] {problem}")
    return texts
