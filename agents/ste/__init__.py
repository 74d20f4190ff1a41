"""STE (simulated trial and error): explore tools with imagined queries, keep the trials, learn from them.

- :mod:`agents.ste.chat`: the chat-model interface every STE step talks to.
- :mod:`agents.ste.prompts`: the imagine and reflect prompts and how their replies are read.
- :mod:`agents.ste.explore`: exploration with long- and short-term memory (``toolenv ste explore``).
- :mod:`agents.ste.cli`: ``toolenv ste COMMAND``.
"""

from agents.ste.chat import (
    ChatModel,
    LocalChatModel,
    OpenAIChatModel,
    ScriptedChatModel,
    VLLMChatModel,
    load_chat_model,
)
from agents.ste.explore import ExploreConfig, explore, load_trials

__all__ = [
    "ChatModel",
    "ExploreConfig",
    "LocalChatModel",
    "OpenAIChatModel",
    "ScriptedChatModel",
    "VLLMChatModel",
    "explore",
    "load_chat_model",
    "load_trials",
]
