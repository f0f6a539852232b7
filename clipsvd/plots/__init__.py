"""Plotly figures for every analysis in clipsvd.analysis, one style (clipsvd.plots.style), and exports."""
from clipsvd.plots.embeddings import umap_figure
from clipsvd.plots.export import FORMATS, MIME_TYPES, ExportError, export_figure, export_table, find_browser
from clipsvd.plots.heads import head_heatmap, head_ranking_bar
from clipsvd.plots.textspan import textspan_figure
from clipsvd.plots.weights import spectra_figure, sv_rotation_heatmap, sv_shift_heatmap

__all__ = [
    "ExportError", "FORMATS", "MIME_TYPES", "export_figure", "export_table", "find_browser", "head_heatmap",
    "head_ranking_bar", "spectra_figure", "sv_rotation_heatmap", "sv_shift_heatmap", "textspan_figure", "umap_figure",
]
