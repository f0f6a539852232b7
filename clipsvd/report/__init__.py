"""One report per run (or two runs side by side): config, metrics, σ shifts, head ranking, explanations before
vs after with their shift, UMAP — as a self-contained HTML file, a PDF, and the paper table in LaTeX."""
from clipsvd.report.content import RunAnalysis, analyse_run
from clipsvd.report.html import report_html
from clipsvd.report.latex import explanation_latex, latex_escape, latex_table, transfer_latex
from clipsvd.report.pdf import html_bytes_to_pdf, html_to_pdf

__all__ = ["RunAnalysis", "analyse_run", "explanation_latex", "html_bytes_to_pdf", "html_to_pdf", "latex_escape",
           "latex_table", "report_html", "transfer_latex"]
