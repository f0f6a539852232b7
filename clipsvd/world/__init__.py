"""A generated, captioned world whose truth is known: objects with a shape, colour, size, fill,
position and count, drawn in a clean style (for pretraining the small world CLIP) and in shifted
styles (microscopy-like, sketch) for adaptation; captions from a grammar with paraphrases;
classification datasets and a factor-tagged description corpus drawn from it.
"""
