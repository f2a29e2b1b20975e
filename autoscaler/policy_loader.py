"""Finding a policy by name and building a revision's autoscaler with it; one path for every shell.

* :func:`parse_policy` reads a scenario's or a stack file's ``policy:`` value — a name (``kpa``,
  ``hpa``, ``keda-http``, ``module:Class`` or ``path/to/file.py:Class``) or a mapping
  ``{name: ..., <option>: ...}`` whose other keys are the policy's keyword options — and loads a
  ``module:Class`` at once, so a bad one is reported where it is written, not at the first decision.
* :func:`with_policy` puts it into a revision's settings (an HPA class annotation and a different
  ``policy:`` conflict).
* :func:`make_autoscaler` is what the simulator and the live service call instead of building
  :class:`~autoscaler.revision.RevisionAutoscaler` themselves: the KPA for no policy, else
  :class:`~autoscaler.policy.PolicyAutoscaler` around the built policy.

Importing a user's module runs its code, once, when the file naming it is read; nothing here reads
a clock.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoscaler.choice import KPA, PolicyChoice
from autoscaler.hpa import HPAPolicy
from autoscaler.keda_http import KedaHttpPolicy
from autoscaler.policy import PolicyAutoscaler, PolicyError, built
from autoscaler.revision import RevisionAutoscaler, RevisionSettings

__all__ = ["BUILTIN", "make_autoscaler", "parse_policy", "with_policy"]

BUILTIN: dict[str, Callable[..., Any]] = {"hpa": HPAPolicy, "keda-http": KedaHttpPolicy}
_HELP = "give kpa, hpa, keda-http, module:Class or path/to/file.py:Class"


def _module(where: str, base_dir: Path) -> Any:
    if where.endswith(".py") or "/" in where:
        path = Path(where)
        path = path if path.is_absolute() or not (base_dir / path).exists() else base_dir / path
        if not path.is_file():
            raise PolicyError(f"no such file {path}")
        name = "kpa_policy_" + re.sub(r"\W", "_", str(path.resolve()))
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PolicyError(f"cannot load {path} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(where)


def load_class(name: str, base_dir: Path = Path(".")) -> Callable[..., Any]:
    """The class a ``module:Class`` (or ``file.py:Class``) names; PolicyError naming it otherwise."""
    where, _, attr = name.rpartition(":")
    if not where or not attr:
        raise PolicyError(f"policy {name!r}: unknown; {_HELP}")
    try:
        module = _module(where, base_dir)
    except PolicyError as exc:
        raise PolicyError(f"policy {name!r}: {exc}") from None
    except Exception as exc:
        raise PolicyError(f"policy {name!r}: cannot import {where}: {type(exc).__name__}: {exc}") from exc
    cls: Callable[..., Any] | None = getattr(module, attr, None)
    if cls is None or not callable(cls):
        raise PolicyError(f"policy {name!r}: {where} has no class {attr}")
    if not callable(getattr(cls, "decide", None)):
        raise PolicyError(f"policy {name!r}: {attr} has no decide(observation) method (docs/experiments.md)")
    return cls


def parse_policy(value: Any, base_dir: Path = Path(".")) -> PolicyChoice:
    """A ``policy:`` value (name or ``{name: ..., options...}``) as a :class:`PolicyChoice`."""
    options: dict[str, Any] = {}
    if isinstance(value, Mapping):
        options = {str(k): v for k, v in value.items() if k != "name"}
        value = value.get("name")
    if not isinstance(value, str) or not value:
        raise PolicyError(f"policy={value!r}: {_HELP} (or a mapping with name: and its options)")
    if value == KPA:
        if options:
            raise PolicyError(f"policy kpa takes no options ({', '.join(options)}): use annotations, config")
        return PolicyChoice(KPA)
    factory = None if value in BUILTIN else load_class(value, base_dir)
    return PolicyChoice(value, factory, tuple(options.items()))


def with_policy(settings: RevisionSettings, choice: PolicyChoice) -> RevisionSettings:
    """``settings`` running ``choice``; an HPA class annotation and another policy cannot both hold."""
    if settings.policy is not None and choice.name != settings.policy.name:
        raise PolicyError(
            f"policy {choice.name} conflicts with the annotation autoscaling.knative.dev/class, which "
            f"selects {settings.policy.name}; keep one"
        )
    if settings.policy is not None:  # the annotation's metric/target, then the policy's own options
        choice = replace(choice, options=settings.policy.options + choice.options)
    chosen = replace(settings, policy=None if choice.name == KPA else choice)
    make_autoscaler(chosen, 0.0)  # its options are checked now, where the file names it
    return chosen


def make_autoscaler(
    settings: RevisionSettings, now: float, ready_pods: int | None = 0, *, strict: bool = True
) -> RevisionAutoscaler | PolicyAutoscaler:
    """The revision's autoscaler: the KPA, or its policy behind :class:`PolicyAutoscaler`.

    ``strict`` (the simulator): a policy that fails raises :class:`PolicyError`; live (False) the
    previous decision stays, with the error as its reason.
    """
    choice = settings.policy
    if choice is None or choice.name == KPA:
        return RevisionAutoscaler(settings, now, ready_pods)
    factory = choice.factory or BUILTIN.get(choice.name)
    if factory is None:
        raise PolicyError(f"policy {choice.name!r}: unknown; {_HELP}")
    policy = built(choice.name, factory, settings, now, choice.kwargs)
    return PolicyAutoscaler(choice.name, policy, settings, now, ready_pods, strict=strict)
