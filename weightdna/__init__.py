"""weightdna: study and compress the weights of trained neural networks.

The package follows the data: weights are loaded, mapped to coordinates, analysed,
fitted by a coordinate network (the DNA), encoded, decoded, evaluated and reported.
`weightdna.nn` is the from-scratch NumPy engine everything else is trained and checked with.
"""

from weightdna.errors import WeightDNAError

__version__ = "0.1.0"
__all__ = ["WeightDNAError", "__version__"]
