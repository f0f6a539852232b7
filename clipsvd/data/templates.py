"""One prompt template per dataset, as used by CoOp / CLIP-SVD (natural) and BiomedCoOp (biomedical)."""
from __future__ import annotations

DEFAULT_TEMPLATE = "a photo of a {}."

TEMPLATES: dict[str, str] = {
    # The 11 natural datasets of CoOp.
    "Caltech101": "a photo of a {}.",
    "ImageNet": "a photo of a {}.",
    "SUN397": "a photo of a {}.",
    "StanfordCars": "a photo of a {}.",
    "DescribableTextures": "{} texture.",
    "DTD": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "Food101": "a photo of {}, a type of food.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "OxfordPets": "a photo of a {}, a type of pet.",
    "UCF101": "a photo of a person doing {}.",
    # ImageNet's test-only variants (CoOp trainers/zsclip.py CUSTOM_TEMPLATES; CLIP-SVD
    # configs/domain_generalization/*.yaml give the same).
    "ImageNetV2": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
    # The biomedical datasets of BiomedCoOp.
    "BTMRI": DEFAULT_TEMPLATE,
    "BUSI": DEFAULT_TEMPLATE,
    "CHMNIST": DEFAULT_TEMPLATE,
    "COVID": "a chest xray of {}.",
    "COVID-QU-Ex": "a chest xray of {}.",
    "COVID_19": "a chest xray of {}.",
    "CTKidney": DEFAULT_TEMPLATE,
    "DermaMNIST": DEFAULT_TEMPLATE,
    "KneeXray": DEFAULT_TEMPLATE,
    "Kvasir": DEFAULT_TEMPLATE,
    "LungColon": DEFAULT_TEMPLATE,
    "OCTMNIST": DEFAULT_TEMPLATE,
    "RETINA": DEFAULT_TEMPLATE,
}


def template_for(name: str) -> str:
    """The template of a dataset name: exact key, then case-insensitive, any COVID* name, else the default."""
    if name in TEMPLATES:
        return TEMPLATES[name]
    lowered = {k.lower(): v for k, v in TEMPLATES.items()}
    if name.lower() in lowered:
        return lowered[name.lower()]
    if name.lower().startswith("covid"):
        return TEMPLATES["COVID"]
    return DEFAULT_TEMPLATE
