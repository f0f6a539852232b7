"""Models fine-tuned elsewhere become runs of the store (method `imported`): a layer above training, whose
experiment config and run record an imported run shares, and below analysis, which opens it like any run."""
from clipsvd.importing.checkpoint import FineTuned, import_checkpoint, read_finetuned
from clipsvd.importing.evaluation import evaluate_imported
from clipsvd.importing.options import ImportOptions

__all__ = ["FineTuned", "ImportOptions", "evaluate_imported", "import_checkpoint", "read_finetuned"]
