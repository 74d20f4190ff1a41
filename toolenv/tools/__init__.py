"""Tools the environments expose to models: typed Python functions with JSON schemas."""

from toolenv.tools.base import Tool, ToolArgumentError, ToolResult, ToolTimeout, as_tool, did_you_mean
from toolenv.tools.pool import Api, api_pool, make_tools

__all__ = ["Api", "Tool", "ToolArgumentError", "ToolResult", "ToolTimeout", "api_pool", "as_tool", "did_you_mean", "make_tools"]
