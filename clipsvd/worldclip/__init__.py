"""The small world CLIP's own pretraining (`pretrain`, configured by the torch-free `config`) and the checks of
what it knows (`zeroshot`: held-out accuracy; `evaluation`: zero-shot per style, factor heads, ablation).

It sits above training and analysis (it uses their loop schedule, prediction and TextSpan) and below the CLI;
the world it learns from is `clipsvd.world`, its shipped weights' loader is in `clipsvd.models`. This package
imports nothing itself, so the CLI can read `config` for its --help without torch.
"""
