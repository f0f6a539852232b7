"""Choice lists shared by the library, the CLI and the dashboard, in a module that imports nothing heavy.

`clipsvd --help` builds every parser without importing torch; the modules that own these lists (presets,
model loading, dataset specs, figure export) import from here, so the CLI offers exactly what they accept.
"""
PROTOCOLS = ("few-shot", "base2novel")
BACKBONES = ("natural", "biomedical")
DATASET_KINDS = ("builtin", "imagefolder", "coop", "biomedcoop", "medmnist")
DEFAULT_DATASET = "world-shape-microscopy"  # the world's microscopy-like shape task
ACTIVATIONS = ("auto", "quickgelu", "gelu")
IMAGE_FORMATS = ("png", "svg", "pdf")
FIGURE_FORMATS = (*IMAGE_FORMATS, "html")
ANALYSES = ("sv", "heads", "textspan", "umap")  # what `clipsvd analyze --what` can write
RUN_ACTIONS = ("list", "show", "delete", "export")
