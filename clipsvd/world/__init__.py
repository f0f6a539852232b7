"""A generated, captioned world whose truth is known: objects with a shape, colour, size, fill,
position and count, drawn in a clean style (for pretraining the small world CLIP) and in shifted
styles (microscopy-like, sketch) for adaptation; captions from a grammar with paraphrases; the
zero-shot prompt templates and a factor-tagged description corpus drawn from it.

Only the generator lives here, below every other layer but the leaf modules: the world's
classification datasets are in `clipsvd.data.world`, the world CLIP's pretraining and evaluation in
`clipsvd.worldclip`.
"""
