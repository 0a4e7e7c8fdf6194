"""Conversation templates of LLaVA-1.5, with the original package's names and exact strings.

Example (the POPE prompt of LLaVA-1.5):

>>> conv = conv_templates["vicuna_v1"].copy()
>>> conv.append_message(conv.roles[0], "<image>\\nIs there a dog?")
>>> conv.append_message(conv.roles[1], None)
>>> conv.get_prompt().endswith("questions. USER: <image>\\nIs there a dog? ASSISTANT:")
True
"""

from __future__ import annotations

import dataclasses
from enum import Enum, auto


class SeparatorStyle(Enum):
    SINGLE = auto()
    TWO = auto()
    PLAIN = auto()


@dataclasses.dataclass
class Conversation:
    system: str
    roles: tuple[str, str]
    messages: list
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"

    def _messages_for_prompt(self) -> list:
        """Messages with an image tuple in the first turn rendered as '<image>\\n' + text."""
        messages = list(self.messages)
        if messages and isinstance(messages[0][1], tuple):
            role, (text, *_rest) = messages[0]
            messages[0] = (role, "<image>\n" + text.replace("<image>", "").strip())
        return messages

    def get_prompt(self) -> str:
        messages = self._messages_for_prompt()
        if self.sep_style == SeparatorStyle.SINGLE:
            ret = self.system + self.sep
            for role, message in messages:
                if message:
                    message = message[0] if isinstance(message, tuple) else message
                    ret += role + ": " + message + self.sep
                else:
                    ret += role + ":"
            return ret
        if self.sep_style == SeparatorStyle.TWO:
            seps = [self.sep, self.sep2]
            ret = self.system + seps[0]
            for i, (role, message) in enumerate(messages):
                if message:
                    message = message[0] if isinstance(message, tuple) else message
                    ret += role + ": " + message + seps[i % 2]
                else:
                    ret += role + ":"
            return ret
        if self.sep_style == SeparatorStyle.PLAIN:
            seps = [self.sep, self.sep2]
            ret = self.system
            for i, (_role, message) in enumerate(messages):
                if message:
                    message = message[0] if isinstance(message, tuple) else message
                    ret += message + seps[i % 2]
            return ret
        raise ValueError(f"Invalid style: {self.sep_style}")

    def append_message(self, role: str, message) -> None:
        self.messages.append([role, message])

    def copy(self) -> "Conversation":
        return Conversation(
            system=self.system,
            roles=self.roles,
            messages=[[role, message] for role, message in self.messages],
            offset=self.offset,
            sep_style=self.sep_style,
            sep=self.sep,
            sep2=self.sep2,
            version=self.version,
        )

    def dict(self) -> dict:
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": self.messages,
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
        }


conv_vicuna_v1 = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llava_v1 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
)

default_conversation = conv_vicuna_v1
# What LLaVA-1.5's own evaluation scripts pass (--conv-mode vicuna_v1): every tool's default.
DEFAULT_CONV_MODE = "vicuna_v1"
conv_templates = {
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llava_v1": conv_llava_v1,
    "plain": conv_llava_plain,
}


def build_prompt(question: str, conv_mode: str = DEFAULT_CONV_MODE) -> str:
    """The single-turn LLaVA prompt for `question`, with the image slot before it."""
    if conv_mode not in conv_templates:
        raise ValueError(f"unknown conv mode {conv_mode!r}; known: {sorted(conv_templates)}")
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], "<image>\n" + question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()
