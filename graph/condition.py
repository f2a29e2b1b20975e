"""Step conditions in GJSON syntax, evaluated as KServe's router does: a condition matches when the
JSON it is applied to is valid and the GJSON path finds something (``gjson.GetBytes(...).Exists()``).

Evaluation is ``pygjson``, a binding of tidwall's gjson.rs: the same path language as the Go GJSON
KServe's router uses, modifiers and queries included, so KServe's own example
``[@this].#(predictions.0=="dog")`` means here what it means there. GJSON never reports a bad path
(it just finds nothing), so a typo would silently route every request the other way; ``problem``
catches the mistakes a path can be checked for without data — unbalanced brackets, parentheses or
braces, an unclosed string, an empty or overlong path — when the graph is loaded.
"""

from __future__ import annotations

import pygjson

MAX_CONDITION_CHARS = 1000  # longer conditions are refused when the graph is loaded
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def problem(condition: str) -> str | None:
    """What is wrong with ``condition``'s syntax (None: nothing this check can see)."""
    if not condition.strip():
        return 'is empty; give a GJSON path such as predictions.0 or [@this].#(predictions.0=="dog")'
    if len(condition) > MAX_CONDITION_CHARS:
        return f"is longer than {MAX_CONDITION_CHARS} characters"
    stack: list[str] = []
    quote = False
    escaped = False
    for index, char in enumerate(condition):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quote = False
        elif char == '"':
            quote = True
        elif char in _CLOSE:
            stack.append(_CLOSE[char])
        elif char in _CLOSE.values() and (not stack or stack.pop() != char):
            return f"has an unmatched {char!r} at character {index + 1}"
    if quote:
        return 'has a string that is never closed (a missing ")'
    if stack:
        return f"misses {''.join(reversed(stack))!r} at its end"
    return None


def matches(document: bytes, condition: str) -> bool:
    """Whether ``condition`` finds anything in ``document`` (False for a body that is not JSON)."""
    if not pygjson.validate(document):
        return False
    return pygjson.get_bytes(document, condition).exists()
