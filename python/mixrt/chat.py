"""Chat prompts: a model's Jinja chat template (FORMAT.md key tokenizer.chat_template) rendered as
transformers' apply_chat_template does, and tokenized so that control tokens written inside
message contents stay plain text: only the template's own markers are special. Used by
mixrt.api (Model.chat, Model.create_chat_completion); tested by tests/test_chat.py."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Callable, Sequence

# Message contents are swapped for these markers to see where the template puts them.
_MARKER = "\ue000{}\ue001"
_MARKER_RE = re.compile("(\ue000\\d+\ue001)")


class ChatTemplateError(ValueError):
    """A chat template that cannot be compiled or rendered, or messages it cannot take."""


def _raise_exception(message):
    raise ChatTemplateError(f"chat template: {message}")


def check_messages(messages) -> list:
    """messages as a list of {'role': str, 'content': str, ...} dicts, or a ValueError naming the
    first bad entry."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages: expected a list of {{'role': ..., 'content': ...}} dicts, "
                        f"found {type(messages).__name__}")
    if not messages:
        raise ValueError("messages: expected at least one message, found an empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TypeError(f"messages[{i}]: expected a dict with 'role' and 'content', "
                            f"found {type(message).__name__}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                found = type(message[key]).__name__ if key in message else "nothing"
                raise TypeError(f"messages[{i}]['{key}']: expected a str, found {found}")
    return list(messages)


class ChatTemplate:
    """A compiled chat template. render() gives the prompt text; tokenize() its token ids."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template does not compile: {e}") from None
        self._special = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages, add_generation_prompt: bool = True, **variables) -> str:
        import jinja2

        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **self._special, **variables)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template: {e}") from None

    def tokenize(self, tokenize: Callable[[str, bool], list], messages, add_generation_prompt: bool = True,
                 special: bool = False, **variables) -> list:
        """Token ids of the rendered conversation. tokenize(text, special) is the model's
        tokenizer (no BOS: templates write it themselves). With special=False, a message whose
        content would tokenize differently with control tokens recognised is encoded as plain
        text, cut out of the template's text where the template placed it verbatim; templates
        that change such a content (trim it, say) cannot be followed and raise instead."""
        messages = check_messages(messages)
        text = self.render(messages, add_generation_prompt, **variables)
        risky = [] if special else [i for i, m in enumerate(messages)
                                    if tokenize(m["content"], True) != tokenize(m["content"], False)]
        if not risky:
            return tokenize(text, True)
        masked = [dict(m, content=_MARKER.format(i)) if i in risky else m for i, m in enumerate(messages)]
        pieces = _MARKER_RE.split(self.render(masked, add_generation_prompt, **variables))
        markers = [int(p[1:-1]) for p in pieces[1::2]]
        if sorted(markers) != risky:
            raise ChatTemplateError(self._cannot_protect(risky[0], messages))
        ids = []
        for index, piece in enumerate(pieces):
            if index % 2 == 0:
                ids += tokenize(piece, True)
            else:
                ids += tokenize(messages[int(piece[1:-1])]["content"], False)
        rebuilt = "".join(messages[int(p[1:-1])]["content"] if k % 2 else p for k, p in enumerate(pieces))
        if rebuilt != text:
            raise ChatTemplateError(self._cannot_protect(risky[0], messages))
        return ids

    @staticmethod
    def _cannot_protect(index: int, messages) -> str:
        return (f"messages[{index}]['content'] contains control-token text, and the chat template "
                "does not copy it verbatim, so it cannot be kept as plain text; remove it, or "
                "pass special=True to let control tokens in message contents through")
