"""Choice lists shared by the library, the CLI and the dashboard, in a module that imports nothing heavy.

`clipsvd --help` builds every parser without importing torch; the modules that own these lists (presets,
model loading, dataset specs, figure export) import from here, so the CLI offers exactly what they accept.
"""
PROTOCOLS = ("few-shot", "base2novel")
BACKBONES = ("natural", "biomedical", "world")  # whose presets apply; "world": the world CLIP on its datasets
DATASET_KINDS = ("builtin", "imagefolder", "coop", "biomedcoop", "medmnist")
# The CLI's and dashboard's default dataset: shapes in the microscopy-like style of the generated world,
# where the world CLIP's zero-shot accuracy drops and adaptation has something to do.
DEFAULT_DATASET = "world-shape-microscopy"
ACTIVATIONS = ("auto", "quickgelu", "gelu")
IMAGE_FORMATS = ("png", "svg", "pdf")
FIGURE_FORMATS = (*IMAGE_FORMATS, "html")
ANALYSES = ("sv", "heads", "textspan", "umap")  # what `clipsvd analyze --what` can write
RUN_ACTIONS = ("list", "show", "delete", "export")
