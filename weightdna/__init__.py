"""weightdna: study and compress the weights of trained neural networks.

The package follows the data: weights are loaded, mapped to coordinates, analysed,
fitted by a coordinate network (the DNA), encoded, decoded, evaluated and reported.
`weightdna.nn` is the from-scratch NumPy engine everything else is trained and checked with.

The Python API (docs/api.md): `compress`, `decompress`, `load_file`, `safe_open` and
`compare_outputs`, imported when first used, so that ``import weightdna`` stays light.
"""

from weightdna._lazy import lazy_exports
from weightdna.errors import WeightDNAError

__version__ = "0.1.0"
_EXPORTS = {
    "compare_outputs": "evaluate.compare",
    "compress": "api",
    "decompress": "api",
    "load_file": "api",
    "safe_open": "api",
}
__all__ = ["WeightDNAError", "__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
