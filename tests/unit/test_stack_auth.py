"""`kpa up` stack files: ``kpa.dev/auth-*`` annotations become a revision's data-path authentication,
with a bad value refused at its line and a tokens file found beside the stack file."""

from __future__ import annotations

import re

import pytest

from localbackend.stack import pod_template
from localbackend.stack_file import StackConfigError, parse_stack

STACK = """\
revisions:
  - name: hello
    command: python -m kpa.sample_app
    annotations:
      autoscaling.knative.dev/target: "5"
      {annotation}
"""


def stack(annotation: str, tmp_path):
    return parse_stack(STACK.format(annotation=annotation), "s.yaml", tmp_path)


def test_a_relative_tokens_file_is_found_beside_the_stack_file_and_reaches_the_queue_proxy(tmp_path):
    (tmp_path / "tokens.txt").write_text("abc\n")
    spec = stack("kpa.dev/auth-bearer-tokens-file: tokens.txt", tmp_path).revisions[0]
    assert spec.auth.bearer_tokens_file == str(tmp_path / "tokens.txt")
    assert pod_template(spec).queue_proxy_env == {"KPA_AUTH_BEARER_TOKENS_FILE": str(tmp_path / "tokens.txt")}


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ("kpa.dev/auth-bearer-tokens-file: nope.txt",
         's.yaml:6: revisions[0].annotations[kpa.dev/auth-bearer-tokens-file]="nope.txt": cannot read'),
        ("kpa.dev/auth-bearer-tokens-file: empty.txt", "holds no token; write one token per line"),
        ("kpa.dev/auth-jwks-url: https://issuer/jwks",
         "s.yaml:6: revisions[0].annotations: kpa.dev/auth-jwks-url="),
        ("kpa.dev/auth-tokens: x",
         'annotation kpa.dev/auth-tokens="x": unknown; known: kpa.dev/auth-bearer-tokens-file'),
    ],
    ids=["unreadable-tokens-file", "empty-tokens-file", "jwks-url-alone", "unknown-annotation"],
)  # fmt: skip
def test_bad_auth_annotations_are_refused_at_their_line(annotation, message, tmp_path):
    (tmp_path / "empty.txt").write_text("# no tokens yet\n")
    with pytest.raises(StackConfigError, match=re.escape(message)):
        stack(annotation, tmp_path)
