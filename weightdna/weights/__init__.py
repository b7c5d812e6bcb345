"""Weights in and out: read a trained model's tensors, describe them, write them back.

``load_weights`` opens safetensors, PyTorch checkpoints, NumPy .npz, Hugging Face folders
and ONNX; ``ModelWeights`` lists every tensor as a ``TensorInfo`` (role, layer, kind) and
reads values on demand; ``save_weights`` writes safetensors. Needs nothing else of weightdna.
"""

from weightdna._lazy import lazy_exports

# Imported on first use: a light submodule (a command's choices) is read without
# the rest, which imports torch.
_EXPORTS = {
    "ModelWeights": "model",
    "ROLES": "roles",
    "TensorInfo": "model",
    "detect_format": "load",
    "find_state_dict": "load",
    "infer_role": "roles",
    "load_weights": "load",
    "minilm_path": "minilm",
    "save_weights": "save",
    "split_layer": "roles",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
