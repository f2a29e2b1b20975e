"""Label and field selectors: parsing the query syntax, matching objects, and rendering a
Deployment's ``LabelSelector`` back into that syntax (the Scale subresource's ``status.selector``).

List and watch share these, so an object a list would return is exactly one a watch reports.
A selector the fake cannot evaluate is a 400 naming it, never silently ignored (reference §7, 4).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fakecluster import errors
from fakecluster.resources import ResourceType

Matcher = Callable[[Mapping[str, Any]], bool]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_EQUALITY = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^()]*)\)\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
# Field labels whose value lives under another path (an Event's "source" is its source.component).
_FIELD_PATHS = {"source": "source.component"}


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside parentheses: ``a in (x,y),b`` is two requirements."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def _requirement(text: str) -> Matcher:
    if match := _EQUALITY.match(text):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _SET.match(text):
        key, op, raw = match.groups()
        values = {value.strip() for value in raw.split(",")}
        if any(not re.fullmatch(_VALUE, value) for value in values):
            raise errors.bad_request(f"unable to parse requirement: invalid value in {text.strip()!r}")
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: labels.get(key) not in values
    if match := _EXISTS.match(text):
        negated, key = match.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise errors.bad_request(f"unable to parse requirement: {text.strip()!r} in labelSelector")


def label_matcher(selector: str) -> Matcher:
    """A matcher of an object's labels for ``labelSelector``; "" matches everything."""
    requirements = [_requirement(part) for part in _split_top_level(selector)]
    return lambda labels: all(requirement(labels) for requirement in requirements)


def field_value(obj: Mapping[str, Any], label: str) -> str:
    """The string a field selector compares: a missing field reads as "", as in kube-apiserver."""
    value: Any = obj
    for step in _FIELD_PATHS.get(label, label).split("."):
        value = value.get(step) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def field_matcher(selector: str, resource: ResourceType) -> Matcher:
    """A matcher of whole objects for ``fieldSelector``; a field this type does not index is a 400."""
    checks: list[tuple[str, bool, str]] = []
    for part in _split_top_level(selector):
        match = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(\S*)\s*", part)
        if not match:
            raise errors.bad_request(
                f"invalid field selector: {part.strip()!r}: expected field=value or field!=value"
            )
        label, op, value = match.groups()
        if label not in resource.supported_field_labels:
            raise errors.bad_request(f"field label not supported: {label}")
        checks.append((label, op != "!=", value))
    return lambda obj: all((field_value(obj, label) == value) == equal for label, equal, value in checks)


def object_matcher(label_selector: str, field_selector: str, resource: ResourceType) -> Matcher:
    """Both selectors at once, over a whole object; parsing errors surface here, before any answer."""
    labels = label_matcher(label_selector)
    fields = field_matcher(field_selector, resource)
    return lambda obj: labels(obj.get("metadata", {}).get("labels") or {}) and fields(obj)


def render(label_selector: Mapping[str, Any] | None) -> str:
    """A ``LabelSelector`` object in query syntax, requirements sorted by key as Go renders them."""
    requirements: list[tuple[str, str]] = []
    for key, value in ((label_selector or {}).get("matchLabels") or {}).items():
        requirements.append((key, f"{key}={value}"))
    for expression in (label_selector or {}).get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = ",".join(sorted(expression.get("values") or []))
        text = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(operator)
        if text is None:
            raise errors.bad_request(
                f"label selector operator {operator!r} of key {key!r} is not In, NotIn, "
                "Exists or DoesNotExist"
            )
        requirements.append((key, text))
    return ",".join(text for _, text in sorted(requirements))
