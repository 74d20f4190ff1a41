"""Tools the environments expose to models: typed Python functions with JSON schemas."""

from toolenv.tools.base import Tool, ToolArgumentError, ToolResult, ToolTimeout, as_tool, did_you_mean

__all__ = ["Tool", "ToolArgumentError", "ToolResult", "ToolTimeout", "as_tool", "did_you_mean"]
