"""MedSynth's class taxonomies: six findings per modality (``"coarse"``), or findings × side × extent (``"fine"``).

The *coarse* taxonomy has the six findings of each modality, each drawn anywhere and at any size. The *fine*
taxonomy splits each finding by the descriptors a report would state — which side (or eye), how large or
how severe, which territory — into 16 to 24 classes per modality, 96 in all. A fine class pins the named
draws of its finding's renderer (a :class:`~medmeta_lib.data.synth_fields.Draw` variant): ``side`` ±1,
``extent`` a "small" or a "large" part of the finding's size/severity range, and so on. Grades are kept
apart (a gap between them, and the largest grade reaching beyond the coarse range) so that a grade is
visible, not a coin toss at a boundary; BENCHMARKS.md section 9 has the measurements. With 17 or more
classes per modality, a modality can hold disjoint meta-train, validation and test classes of its own,
so 5-way tasks on *new classes within a seen modality* are possible (the standard few-shot setting).

Sides follow the radiological convention: the patient's right is on the image's left (``side = -1``). For
the fundus, ``eye = +1`` puts the optic disc on the image's right: a right eye (OD).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FINE", "FineClass", "fine_classes"]

#: (class name, finding index in the coarse list, variant)
FineClass = tuple[str, int, dict[str, Any]]

# Grades as fractions of the coarse finding's range of a draw. Adjacent halves made grades a coin toss near
# the boundary (a CNN that saw all 98 classes confused "small" with "large" more than it confused findings),
# so the grades are now apart: "small" in the second quarter (not the faint end, which looks normal), "large"
# beyond the coarse range by up to half of it. Draws with a hard limit (cup-to-disc ratio, the infarct's
# territory) stay inside their range with a gap instead (``_IN_*``).
_LOW, _HIGH = (0.25, 0.5), (1.0, 1.5)
_IN_LOW, _IN_HIGH = (0.2, 0.4), (0.8, 1.0)
_SIDES = (("right", -1.0), ("left", 1.0))  # patient's side; right lung / hemisphere on the image's left


def _sided(finding: str, idx: int, grades: tuple[tuple[str, dict[str, Any]], ...], **fixed: Any) -> list[FineClass]:
    return [(f"{finding}-{side}-{grade}", idx, {"side": s, **fixed, **g}) for side, s in _SIDES for grade, g in grades]


def _chest() -> list[FineClass]:
    size = (("small", {"extent": _LOW}), ("large", {"extent": _HIGH}))
    return [
        ("normal", 0, {}),
        *_sided("pneumonia", 1, (("focal", {"extent": _LOW}), ("extensive", {"extent": _HIGH})), second=1.0),
        *_sided("nodule", 2, size, second=1.0),
        *_sided("effusion", 3, size, both=0.0),
        *_sided("pneumothorax", 5, (("small", {"expanded": (0.25, 0.5)}), ("large", {"expanded": (-0.75, -0.25)}))),
        ("cardiomegaly-mild", 4, {"extent": _LOW}),
        ("cardiomegaly-severe", 4, {"extent": _HIGH}),
    ]


def _dermoscopy() -> list[FineClass]:
    names = ("nevus", "melanoma", "seborrheic_keratosis", "basal_cell_carcinoma", "dermatofibroma", "vascular_lesion")
    return [
        (f"{name}-{size}-{tone}", i, {"extent": e, "pigment": p})
        for i, name in enumerate(names)
        for size, e in (("small", _LOW), ("large", _HIGH))
        for tone, p in (("light", _LOW), ("dark", _HIGH))
    ]


def _fundus() -> list[FineClass]:
    eyes = (("OD", 1.0), ("OS", -1.0))  # right eye: disc on the image's right
    out: list[FineClass] = []
    for eye, e in eyes:
        out += [
            (f"normal-{eye}", 0, {"eye": e}),
            (f"diabetic_retinopathy-{eye}-mild", 1, {"eye": e, "extent": _IN_LOW}),
            (f"diabetic_retinopathy-{eye}-severe", 1, {"eye": e, "extent": _IN_HIGH}),
            (f"glaucoma-{eye}-moderate", 2, {"eye": e, "extent": _IN_LOW}),
            (f"glaucoma-{eye}-advanced", 2, {"eye": e, "extent": _IN_HIGH}),
            (f"macular_degeneration-{eye}-drusen", 3, {"eye": e, "atrophy": 0.0}),
            (f"macular_degeneration-{eye}-atrophic", 3, {"eye": e, "atrophy": 1.0}),
            (f"vein_occlusion-{eye}-inferior", 4, {"eye": e, "sector": -1.0}),
            (f"vein_occlusion-{eye}-superior", 4, {"eye": e, "sector": 1.0}),
            (f"papilledema-{eye}", 5, {"eye": e}),
        ]
    return out


def _histology() -> list[FineClass]:
    # The renderer's "density" draw (+-0.3 in the coarse taxonomy) raises the threshold for nuclei in five
    # tissues (more density, fewer nuclei) and lowers it in normal mucosa, and +-0.3 is too small to be seen
    # as three grades: so the grades lie beyond it (-0.9..-0.6 and +0.6..+0.9) and in its middle half, each
    # in the direction that makes "dense" mean more nuclei. Adipose has too few nuclei for grades to show at
    # any density (one class); mucus shows them only far beyond the coarse range.
    more, fewer, mid = (-1.0, -0.5), (1.5, 2.0), (0.25, 0.75)
    graded = {
        "stroma": (1, (("sparse", fewer), ("moderate", mid), ("dense", more))),
        "lymphocytes": (2, (("sparse", fewer), ("moderate", mid), ("dense", more))),
        "tumor_epithelium": (3, (("sparse", fewer), ("moderate", mid), ("dense", more))),
        "mucus": (4, (("sparse", mid), ("moderate", (-2.0, -1.5)), ("dense", (-3.5, -3.0)))),
        "normal_mucosa": (5, (("sparse", more), ("moderate", mid), ("dense", fewer))),
    }
    return [("adipose", 0, {})] + [
        (f"{name}-{g}", i, {"density": r}) for name, (i, grades) in graded.items() for g, r in grades
    ]


def _brain() -> list[FineClass]:
    size = (("small", {"extent": _LOW}), ("large", {"extent": _HIGH}))
    return [
        ("normal", 0, {}),
        *_sided("glioma", 1, size),
        *_sided("infarct", 2, (("anterior", {"territory": _IN_LOW}), ("posterior", {"territory": _IN_HIGH}))),
        ("atrophy-mild", 3, {"extent": _LOW}),
        ("atrophy-severe", 3, {"extent": _HIGH}),
        ("ms_lesions-many", 4, {"sparsity": _LOW}),
        ("ms_lesions-few", 4, {"sparsity": _HIGH}),
        *_sided("hemorrhage", 5, size),
    ]


FINE: dict[str, tuple[FineClass, ...]] = {
    "chest_xray": tuple(_chest()),
    "dermoscopy": tuple(_dermoscopy()),
    "fundus": tuple(_fundus()),
    "histology": tuple(_histology()),
    "brain_mri": tuple(_brain()),
}


def fine_classes(modality: str) -> tuple[FineClass, ...]:
    """The fine classes of ``modality``: ``(name, finding index, variant)`` triples.

    Example:
        >>> [name for name, _, _ in fine_classes("chest_xray")][:3]
        ['normal', 'pneumonia-right-focal', 'pneumonia-right-extensive']
    """
    if modality not in FINE:
        raise ValueError(f"MedSynth has no modality {modality!r}; choose one of {sorted(FINE)}")
    return FINE[modality]
