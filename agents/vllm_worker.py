"""The worker extension toolenv installs in vLLM's workers (``LLM(worker_extension_cls=...)``).

vLLM's documented route for a trainer to push weights into a running engine is a worker
extension class whose methods ``LLM.collective_rpc(name, args=...)`` calls on every worker
(vLLM's RLHF examples, ``examples/offline_inference/rlhf_utils.py``). This one loads named
tensors into the worker's model with the model's own ``load_weights`` (which maps Hugging Face
names to vLLM's fused layers). It runs inside vLLM and imports nothing of toolenv's.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ToolenvWorkerExtension"]


class ToolenvWorkerExtension:
    """Mixed into vLLM's worker class; ``self.model_runner`` is the worker's."""

    def toolenv_load_weights(self, weights: list[tuple[str, Any]]) -> int:
        """Load ``(name, tensor)`` pairs (Hugging Face names) into the worker's model; returns how many."""
        model = self.model_runner.model  # type: ignore[attr-defined]
        device = next(model.parameters()).device
        model.load_weights(weights=[(name, tensor.to(device)) for name, tensor in weights])
        return len(weights)
