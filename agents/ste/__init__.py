"""STE (simulated trial and error): explore tools with imagined queries, keep the trials, learn from them.

- :mod:`agents.ste.chat`: the chat-model interface every STE step talks to.
- :mod:`agents.ste.explore`: exploration with long- and short-term memory (``toolenv ste explore``).
"""

from agents.ste.chat import (
    ChatModel,
    LocalChatModel,
    OpenAIChatModel,
    ScriptedChatModel,
    VLLMChatModel,
    load_chat_model,
)

__all__ = [
    "ChatModel",
    "LocalChatModel",
    "OpenAIChatModel",
    "ScriptedChatModel",
    "VLLMChatModel",
    "load_chat_model",
]
