"""MedSynth anatomy: one renderer per modality, patients and findings before any acquisition effect.

A renderer turns a batch of patient keys (int64) and one finding id into two *physical* maps
``(B, H, W)``: the main signal, and a secondary contrast component that each site
mixes in with its own weight (bone for radiographs, haemoglobin for dermoscopy and fundus photographs,
eosin for histology, T2 weighting for MRI). Shapes are soft and textured (random fields), never crisp
geometry, and every draw comes from :class:`~medmeta_lib.data.synth_fields.Draw`, so a patient
re-renders exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from medmeta_lib.data.synth_fields import Draw, ell, gauss, line, nexp, pose, soft, texture

__all__ = ["FINDINGS", "RENDERERS", "Renderer"]

# (patient keys, finding id, size, variant) -> (primary, secondary) maps, broadcastable to (B, H, W); a variant
# pins named draws (side, extent, ...; see Draw and synth_classes) and is None for the six findings as such
Renderer = Callable[[Tensor, int, int, "Mapping[str, Any] | None"], tuple[Tensor, Tensor]]
Variant = Mapping[str, Any] | None


# ----------------------------------------------------------------------------------- chest radiograph
CHEST = ("normal", "pneumonia", "nodule", "effusion", "cardiomegaly", "pneumothorax")


def chest_xray(keys: Tensor, finding: int, size: int, variant: Variant = None) -> tuple[Tensor, Tensor]:
    """Frontal chest radiograph: ch0 soft-tissue attenuation (bright = dense), ch1 bone."""
    d = Draw(keys, stream=11, variant=variant)
    u, v = pose(d, size, shift=0.07, scale=0.07)
    au = u.abs()
    body_w, shoulder, neck = d.u(1.0, 1.12), d.u(-0.85, -0.65), d.u(0.25, 0.35)
    lcx, lrx, lry, lcy = d.u(0.47, 0.54), d.u(0.37, 0.45), d.u(0.72, 0.84), d.u(-0.08, 0.02)
    dia, dome_h, med_w = d.u(0.54, 0.7), d.u(0.12, 0.22), d.u(0.11, 0.16)
    hrx, hry, hx, tilt = d.u(0.3, 0.36), d.u(0.2, 0.25), d.u(0.08, 0.14), d.u(0.35, 0.6)
    rib_f, rib_ph, rib_amp = d.u(3.6, 4.4), d.u(0.0, 1.0), d.u(0.035, 0.075)
    tissue, air_dark, bubble = d.u(0.42, 0.6), d.u(0.2, 0.36), d.coin(0.6)
    mark, fine = texture(d, "mid", size), texture(d, "fine", size)
    if finding == 4:  # cardiomegaly: cardiothoracic ratio above ~0.55
        hrx = hrx * d.u(1.28, 1.55, "extent")
        hry = hry * d.u(1.05, 1.2)
    half = torch.maximum(neck, body_w - 2.5 * torch.relu(shoulder - v) ** 1.5)
    body = soft(half - au, 0.04)
    hu, hv = u - hx, v - dia + 0.35 * hry
    hu, hv = hu * torch.cos(tilt) + hv * torch.sin(tilt), hv * torch.cos(tilt) - hu * torch.sin(tilt)
    heart = soft(1 - torch.sqrt((hu / hrx) ** 2 + (hv / hry) ** 2), 0.1)
    sides, lung_full = [], []
    for s in (-1.0, 1.0):
        cy = lcy + (0.0 if s < 0 else 0.02)
        ue = u - s * lcx
        e = torch.sqrt((ue / (lrx * (1 + 0.4 * (v - cy) / lry))) ** 2 + ((v - cy) / lry) ** 2)
        dome = dia - (0.04 if s < 0 else 0.0) - dome_h * torch.relu(1 - (ue / (1.1 * lrx)) ** 2)
        hemi = soft(1 - e, 0.09) * soft(s * u - med_w, 0.04)
        sides.append((s, e, hemi))
        lung_full.append(hemi * soft(dome - v, 0.025))
    lungs = lung_full[0] + lung_full[1]
    vis = lungs * (1 - heart)
    markings = (0.05 * mark + 0.04 * fine) * (1.3 - 0.7 * (au / 0.85).clamp(max=1))
    # findings as the fraction of alveolar air replaced by fluid/tissue (negative: extra air)
    opac = torch.zeros_like(vis)
    pleura = torch.zeros_like(vis)
    if finding == 1:  # pneumonia: soft, patchy air-space opacities, sometimes a diffuse haze
        for k in range(2):
            side = d.sign("side")
            cx, cy = side * (lcx + d.u(-0.5, 0.5) * lrx), lcy + d.u(-0.1, 0.75) * lry
            env = gauss(u, v, cx, cy, d.u(0.25, 0.45, "extent"))
            amp = d.u(0.45, 0.85, "extent") * (d.coin(0.5, "second") if k else 1.0)
            opac = opac + amp * env * soft(mark + 2.0 * env - 1.0, 0.6)
        opac = opac + d.u(0.0, 0.3, "extent") * (0.7 + 0.3 * fine)
    elif finding == 2:  # nodule(s): small round soft-edged opacities
        for k in range(2):
            side = d.sign("side")
            cx, cy, r = side * (lcx + d.u(-0.6, 0.6) * lrx), lcy + d.u(-0.7, 0.55) * lry, d.u(0.06, 0.11, "extent")
            q = ((u - cx) ** 2 + (v - cy) ** 2) / r**2
            opac = opac + d.u(0.7, 1.0) * (d.coin(0.35, "second") if k else 1.0) * nexp(q**2)
    elif finding == 3:  # effusion: fluid at the base with a meniscus rising laterally, blunted angle
        s0, both, amp = d.sign("side"), d.coin(0.3, "both"), d.u(0.75, 0.95)
        for s, _, hemi in sides:
            on = torch.where(s0 == s, torch.ones_like(both), both)
            h = d.u(0.18, 0.4, "extent")
            level = dia - h - 0.5 * h * torch.relu(s * u - lcx) / lrx
            opac = opac + on * amp * soft(v - level, 0.05) * hemi
    elif finding == 5:  # pneumothorax: lung edge retracted, hyperlucent rim without markings, pleural line
        s0, c = d.sign("side"), d.u(0.45, 0.75, "expanded")  # c: fraction of the lung still expanded
        ec = ell(u, v, s0 * lcx * (1 - 0.25 * (1 - c)), lcy + 0.25 * (1 - c) * lry, lrx * c, lry * (0.5 + 0.5 * c))
        rim = torch.where(s0 < 0, lung_full[0], lung_full[1]) * (1 - soft(1 - ec, 0.04))
        markings = markings * (1 - rim)
        opac = opac - d.u(0.25, 0.45) * rim
        pleura = 0.06 * rim * line((ec - 1) * lrx * c, 0.012)
    air = air_dark * (0.8 + 0.3 * (au / 0.9).clamp(max=1) - 0.15 * v) - markings
    c0 = (
        0.1
        + body * (tissue + 0.08 * (au / body_w).clamp(max=1) ** 4)
        + 0.12 * body * torch.maximum(torch.maximum(soft(med_w - au, 0.04), heart), soft(v - dia + 0.6 * dome_h, 0.06))
        - vis
        * (air - 0.05 * (gauss(u, v, -0.22, -0.05, 0.12) + gauss(u, v, 0.22, -0.03, 0.12)))
        * (1 - opac.clamp(max=1))
        - 0.08 * body * soft(0.035 - au, 0.012) * soft(-0.25 - v, 0.05)
        - 0.1 * bubble * gauss(u, v, 0.38, dia + 0.12, 0.09)
        + pleura
    )
    thorax = body * soft(0.95 * body_w - au, 0.05) * soft(dia + 0.08 - v, 0.05) * soft(v + 0.78, 0.05)
    ribs = torch.relu(torch.cos(2 * math.pi * (rib_f * (v + 0.7 * au - 0.9 * u**2) + rib_ph))) ** 4
    ribs = ribs + 0.35 * torch.relu(torch.cos(2 * math.pi * (0.8 * rib_f * (v + 0.45 * au) + rib_ph))) ** 4
    clav = line(v + 0.62 + 0.2 * au - 0.3 * (au - 0.35) ** 2, 0.035) * soft(au - 0.16, 0.03) * soft(0.75 - au, 0.05)
    c1 = 0.05 * body * soft(0.055 - au, 0.015) + rib_amp * ribs * thorax * (0.3 + 0.7 * lungs)
    return c0, c1 + 0.1 * clav


# ----------------------------------------------------------------------------------- dermoscopy
DERM = ("nevus", "melanoma", "seborrheic_keratosis", "basal_cell_carcinoma", "dermatofibroma", "vascular_lesion")
# per finding: radius range, border harmonics, border roughness, edge width, pigment range
_DERM = {
    0: ((0.3, 0.5), 0.04, 0.2, 0.05, (0.3, 0.5)),
    1: ((0.36, 0.62), 0.12, 0.8, 0.03, (0.35, 0.6)),
    2: ((0.32, 0.56), 0.06, 0.3, 0.012, (0.28, 0.48)),
    3: ((0.3, 0.52), 0.08, 0.5, 0.03, (0.06, 0.16)),
    4: ((0.24, 0.42), 0.05, 0.2, 0.06, (0.22, 0.38)),
    5: ((0.24, 0.44), 0.05, 0.25, 0.015, (0.03, 0.1)),
}


def dermoscopy(keys: Tensor, finding: int, size: int, variant: Variant = None) -> tuple[Tensor, Tensor]:
    """Dermoscopy of a skin lesion: ch0 skin reflectance darkened by melanin, ch1 haemoglobin (dark)."""
    d = Draw(keys, stream=12, variant=variant)
    u, v = pose(d, size, shift=0.0, scale=0.12)
    skin, cx, cy = d.u(0.66, 0.86), d.u(-0.15, 0.15), d.u(-0.15, 0.15)
    coarse, mid, fine = texture(d, "coarse", size), texture(d, "mid", size), texture(d, "fine", size)
    hair = torch.zeros(1, size, size)
    for _ in range(2):
        on, a, off, bend = d.coin(0.35), d.u(0.0, math.pi), d.u(-0.8, 0.8), d.u(-0.4, 0.4)
        t = u * torch.cos(a) + v * torch.sin(a)
        hair = torch.maximum(hair, on * line(v * torch.cos(a) - u * torch.sin(a) - off - bend * t**2, 0.012))
    (r_lo, r_hi), harm, rough, edge, (p_lo, p_hi) = _DERM[finding]
    r0, level = d.u(r_lo, r_hi, "extent"), d.u(p_lo, p_hi, "pigment")
    dx, dy = u - cx, v - cy
    rho = torch.sqrt(dx**2 + dy**2 + 1e-6)
    c1, s1 = dx / rho, dy / rho
    ck, sk, rr = c1, s1, 1.0 + rough * 0.12 * mid
    for _ in range(4):  # border harmonics cos(k*theta - phase), by angle addition (no atan2)
        a_k, ph = harm * d.u(0.3, 1.0), d.u(0.0, 2 * math.pi)
        rr = rr + a_k * (ck * torch.cos(ph) + sk * torch.sin(ph))
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    r = r0 * rr
    inside = soft(r - rho, edge)
    pig = level * inside * (1 + 0.15 * coarse + 0.12 * (soft(fine, 0.3) - 0.5) + 0.2 * (1 - rho / r).clamp(0, 1))
    hb = 0.04 + 0.02 * coarse
    if finding == 1:  # melanoma: asymmetric multi-tone pigment, eccentric blotch, blue-white veil
        ox, oy = d.u(-0.6, 0.6) * r0, d.u(-0.6, 0.6) * r0
        pig = pig + inside * (
            0.3 * coarse.clamp(min=-0.5) * level + d.u(0.1, 0.3) * gauss(u, v, cx + ox, cy + oy, 0.5 * r0)
        )
        pig = pig - inside * d.coin(0.6) * 0.18 * gauss(u, v, cx - oy, cy + ox, 0.4 * r0)
    elif finding == 2:  # seborrheic keratosis: cerebriform fissures, milia-like cysts, comedo-like openings
        pig = pig + inside * (0.18 * line(mid, 0.25) - 0.35 * soft(fine - 1.6, 0.15) + 0.3 * soft(-fine - 1.8, 0.15))
    elif finding == 3:  # basal cell carcinoma: arborizing vessels, blue-grey ovoid nests, ulceration, pearly
        hb = hb + inside * 0.4 * torch.maximum(line(coarse, 0.08), 0.7 * line(mid, 0.06))
        pig = pig + inside * (0.35 * soft(coarse - 1.2, 0.2) - 0.05) + d.coin(0.4) * 0.3 * gauss(u, v, cx, cy, 0.3 * r0)
    elif finding == 4:  # dermatofibroma: central white scar-like patch, delicate peripheral pigment ring
        pig = pig * (rho / r).clamp(0, 1) ** 2 - d.u(0.08, 0.16) * soft(0.5 * r - rho, 0.04)
    elif finding == 5:  # vascular lesion: red-blue lacunae separated by pale septa
        hb = hb + inside * (d.u(0.25, 0.45) * (0.5 + 0.5 * soft(mid + 0.3, 0.25)))
        pig = pig - inside * 0.1 * line(mid + 0.3, 0.12)
    c0 = (skin + 0.03 * coarse + 0.01 * fine) * (1 - pig.clamp(-0.3, 0.95)) - 0.45 * hair
    return c0, -hb


# ----------------------------------------------------------------------------------- fundus photograph
FUNDUS = ("normal", "diabetic_retinopathy", "glaucoma", "macular_degeneration", "vein_occlusion", "papilledema")


def fundus(keys: Tensor, finding: int, size: int, variant: Variant = None) -> tuple[Tensor, Tensor]:
    """Colour fundus photograph (green-like grey): ch0 reflectance, ch1 haemoglobin (vessels, bleeds; dark)."""
    d = Draw(keys, stream=13, variant=variant)
    u, v = pose(d, size, shift=0.05, scale=0.05)
    eye = d.sign("eye")
    px, py, rd, cdr = eye * d.u(0.32, 0.42), d.u(-0.08, 0.06), d.u(0.095, 0.125), d.u(0.2, 0.45)
    mx, my = px - eye * d.u(0.55, 0.65), py + d.u(0.0, 0.08)
    bg, pig, vw, arx, ary = d.u(0.4, 0.52), d.u(0.05, 0.12), d.u(0.016, 0.022), d.u(0.5, 0.6), d.u(0.42, 0.52)
    coarse, mid, fine, micro = (texture(d, s, size) for s in ("coarse", "mid", "fine", "micro"))
    disc_edge: Tensor | float = 0.015
    haze: Tensor | float = 0.0
    if finding == 2:  # glaucoma: large cup, thin neuro-retinal rim
        cdr = d.u(0.6, 0.88, "extent")
    elif finding == 5:  # papilledema: swollen, blurred disc, cup filled in
        rd, disc_edge, cdr, haze = rd * d.u(1.25, 1.5), d.u(0.04, 0.07), d.u(0.0, 0.15), d.u(0.06, 0.12)
    rho_d = torch.sqrt((u - px) ** 2 + (v - py) ** 2)
    rho_m = torch.sqrt((u - mx) ** 2 + (v - my) ** 2)
    acx = px - eye * arx
    near = nexp((rho_d / 0.9) ** 2) * soft(1.3 * arx - eye * (px - u), 0.1)
    vein = line((ell(u, v, acx, py, arx, ary) - 1) * ary, vw) * near
    artery = 0.8 * line((ell(u, v, acx + eye * 0.05, py, 0.9 * arx, 0.85 * ary) - 1) * ary, 0.7 * vw) * near
    nasal = torch.zeros_like(vein)
    for sgn in (-1.0, 1.0):
        ca, sa = math.cos(0.6), sgn * math.sin(0.6)
        t = eye * (u - px) * ca + (v - py) * sa
        n = eye * (v - py) * ca - (u - px) * sa - 0.3 * sgn * t**2
        nasal = nasal + line(n, 0.6 * vw) * soft(t, 0.02) * torch.exp(-t / 0.4)
    vessels = (vein + artery + nasal + 0.35 * line(mid, 0.05) * nexp(rho_d / 0.6)).clamp(max=1)
    sector = torch.zeros_like(vessels)
    if finding == 4:  # vein occlusion: flame haemorrhages and a dilated vein in one arcade's sector
        half = d.sign("sector")
        sector = soft(half * (v - py), 0.05) * soft(eye * (px - u), 0.05) * nexp(rho_d / 0.9)
        vessels = (vessels + 0.7 * sector * line((ell(u, v, acx, py, arx, ary) - 1) * ary, 1.7 * vw)).clamp(max=1)
    if finding == 5:
        vessels = vessels * (1 - 0.6 * gauss(u, v, px, py, 1.6 * rd))
    disc = soft(rd - rho_d, disc_edge)
    c0 = (
        bg * (1.1 - 0.25 * (u**2 + v**2))
        + 0.03 * coarse
        + 0.35 * disc * (1 - 0.5 * vessels)
        + 0.3 * soft(rd * cdr - rho_d, 0.02)
        - pig * gauss(u, v, mx, my, 0.18)
        + 0.05 * gauss(u, v, mx, my, 0.02)
        + haze * gauss(u, v, px, py, 2.0 * rd)
    )
    hb = 0.28 * vessels
    if finding == 1:  # diabetic retinopathy: dot-blot haemorrhages, hard exudates, cotton-wool spots
        sev = d.u(0.3, 0.9, "extent")
        hb = hb + 0.35 * soft(-fine - 1.9 + sev, 0.12) * nexp((rho_m / 0.75) ** 2)
        c0 = c0 + 0.3 * soft(micro - 2.1 + sev, 0.15) * gauss(u, v, mx, my, 0.4) + 0.12 * soft(coarse - 1.5, 0.2) * near
    elif finding == 3:  # AMD: drusen and pigment clumps at the macula, sometimes geographic atrophy
        c0 = c0 + 0.35 * soft(micro - d.u(0.7, 1.3), 0.15) * gauss(u, v, mx, my, 0.28)
        c0 = c0 - 0.2 * soft(-micro - 2.0, 0.1) * gauss(u, v, mx, my, 0.25)
        c0 = c0 + d.coin(0.5, "atrophy") * 0.22 * soft(d.u(0.08, 0.18) - rho_m + 0.03 * mid, 0.01)
    elif finding == 4:
        hb = hb + 0.45 * soft(fine - 0.6, 0.2) * sector
    elif finding == 5:  # peripapillary haemorrhages
        hb = hb + 0.25 * soft(fine - 1.5, 0.15) * gauss(u, v, px, py, 2.2 * rd)
    return c0, -hb


# ----------------------------------------------------------------------------------- histology (H&E)
HISTO = ("adipose", "stroma", "lymphocytes", "tumor_epithelium", "mucus", "normal_mucosa")


def histology(keys: Tensor, finding: int, size: int, variant: Variant = None) -> tuple[Tensor, Tensor]:
    """H&E patch (colorectal tissue types): ch0 brightness minus haematoxylin (nuclei), ch1 eosin (dark)."""
    d = Draw(keys, stream=14, variant=variant)
    u, v = pose(d, size, shift=0.0, scale=0.12)
    stain, density = d.u(0.85, 1.15), d.u(-0.3, 0.3, "density")
    coarse, mid, fine, micro = (texture(d, s, size) for s in ("coarse", "mid", "fine", "micro"))
    if finding == 0:  # adipose: large empty cells with thin membranes, rare flattened nuclei
        mem = line(mid, 0.12)
        hem, eos = 0.5 * mem * soft(micro - 1.8 - density, 0.2), 0.06 + 0.35 * mem
    elif finding == 1:  # stroma: wavy eosinophilic fibres, sparse nuclei
        a, k = d.u(0.0, math.pi), d.u(14.0, 22.0)
        fib = torch.sin(k * (u * torch.cos(a) + v * torch.sin(a)) + 2.5 * coarse + 1.5 * mid)
        hem, eos = 0.55 * soft(fine - 1.9 - density, 0.12), 0.3 + 0.12 * fib + 0.05 * mid
    elif finding == 2:  # lymphocytes: dense small round dark nuclei
        hem, eos = 0.1 + 0.6 * soft(micro - 0.1 - density, 0.18), 0.08 * (1 + 0.5 * mid)
    elif finding == 3:  # tumour epithelium: crowded, large, pleomorphic nuclei around irregular lumens
        lumen = soft(coarse - d.u(0.9, 1.4), 0.1)
        hem = (0.15 + 0.45 * soft(fine - density, 0.25)) * (1 - 0.9 * lumen)
        eos = 0.22 * (1 - 0.9 * lumen)
    elif finding == 4:  # mucus: pale, wispy, few floating cells
        hem = 0.1 + 0.06 * coarse + 0.4 * soft(fine - 2.3 - density, 0.1)
        eos = 0.07 + 0.06 * soft(mid, 0.5)
    else:  # normal mucosa: regular crypts (bright lumen, ring of basal nuclei) in lamina propria
        k, a = d.u(5.0, 7.0), d.u(0.0, math.pi)
        ur, vr = u * torch.cos(a) + v * torch.sin(a), v * torch.cos(a) - u * torch.sin(a)
        g = torch.cos(k * ur + 0.8 * coarse) * torch.cos(k * vr + 0.8 * mid)
        lumen, ring = soft(g - 0.55, 0.08), line(g - 0.2, 0.15)
        hem = 0.55 * ring * soft(micro + 0.5 + density, 0.2) + 0.15 * (1 - ring - lumen).clamp(min=0)
        eos = 0.25 * (1 - lumen)
    return 0.95 - stain * hem * (1 + 0.1 * mid), -stain * eos


# ----------------------------------------------------------------------------------- brain MRI (axial)
BRAIN = ("normal", "glioma", "infarct", "atrophy", "ms_lesions", "hemorrhage")


def brain_mri(keys: Tensor, finding: int, size: int, variant: Variant = None) -> tuple[Tensor, Tensor]:
    """Axial brain MR slice: ch0 T1-weighted signal, ch1 the T2-minus-T1 contrast a site mixes in."""
    d = Draw(keys, stream=15, variant=variant)
    u, v = pose(d, size, shift=0.06, scale=0.07)
    hx, hy, cy = d.u(0.66, 0.82), d.u(0.82, 0.96), d.u(-0.05, 0.05)
    vent, sulc, shrink = d.u(0.75, 1.25), d.u(0.015, 0.04), d.u(0.0, 0.03)
    coarse, mid, fine = (texture(d, s, size) for s in ("coarse", "mid", "fine"))
    shift = torch.zeros_like(vent)
    lx, ly, lr = torch.zeros_like(vent), torch.zeros_like(vent), torch.ones_like(vent)
    if finding == 3:  # atrophy: large ventricles, wide sulci, smaller brain
        vent, sulc, shrink = (
            vent * d.u(1.5, 2.2, "extent"),
            sulc + d.u(0.03, 0.06, "extent"),
            shrink + d.u(0.02, 0.05, "extent"),
        )
    if finding in (1, 5):  # a mass: glioma anywhere in a hemisphere, haemorrhage deep
        side = d.sign("side")
        if finding == 1:
            lx, ly, lr = side * d.u(0.18, 0.45), cy + d.u(-0.4, 0.35), d.u(0.13, 0.25, "extent")
        else:
            lx, ly, lr = side * d.u(0.12, 0.3), cy + d.u(-0.1, 0.15), d.u(0.08, 0.15, "extent")
        shift = -side * 0.35 * lr  # mass effect: midline and ventricles pushed away
    depth = (1 - ell(u, v, 0, cy, hx, hy)) * 0.8  # ~ distance inside the head outline
    fat, bone = line(depth - 0.02, 0.02), soft(depth - 0.01, 0.01) * soft(0.075 - depth, 0.01)
    bdepth = depth - 0.085 - shrink + 0.01 * mid
    brain = soft(bdepth, 0.01)
    csf = torch.maximum(soft(sulc - bdepth, 0.012), line(mid, 0.12 + 2 * sulc) * soft(0.12 - bdepth, 0.02))
    gm = soft(0.1 - bdepth + 0.03 * mid, 0.02)
    for s in (-1.0, 1.0):
        sq = vent**0.5
        ve = ell(u, v, shift + s * 0.1 * sq, cy - 0.05 + 0.05 * s * shift, 0.055 * vent, 0.24 * sq)
        csf = torch.maximum(csf, soft(1 - ve, 0.06))
        gm = torch.maximum(gm, 0.6 * gauss(u, v, shift + s * 0.22, cy + 0.1, 0.09))
    csf = torch.maximum(csf, line(u - shift, 0.012) * soft(v.abs() - 0.3, 0.05))
    t1 = 0.12 * csf + (1 - csf) * (0.44 * gm + 0.7 * (1 - gm))
    t2 = 0.85 * csf + (1 - csf) * (0.5 * gm + 0.4 * (1 - gm))
    rl = torch.sqrt((u - lx) ** 2 + (v - ly) ** 2) / lr
    if finding == 1:  # glioma: necrotic core, enhancing rim, surrounding oedema
        core, rim, oed = soft(0.75 - rl + 0.15 * mid, 0.04), line(rl - 0.85 - 0.1 * mid, 0.12), nexp((rl / 1.9) ** 2)
        t1 = t1 - 0.12 * oed - 0.3 * core + 0.35 * rim
        t2 = t2 + 0.35 * oed + 0.2 * core
    elif finding == 2:  # infarct: wedge-shaped cortical/subcortical territory
        side, a, hw = d.sign("side"), d.u(-0.5, 0.5, "territory"), d.u(0.3, 0.55)
        rho = torch.sqrt(u**2 + (v - cy) ** 2) + 1e-6
        cosang = (side * u * torch.cos(a) + (v - cy) * torch.sin(a)) / rho
        wedge = soft(cosang - torch.cos(hw), 0.05) * soft(d.u(0.3, 0.45) - bdepth + 0.05 * mid, 0.03)
        t1, t2 = t1 - 0.3 * wedge, t2 + 0.55 * wedge
    elif finding == 4:  # multiple sclerosis: ovoid periventricular and juxtacortical T2-bright lesions
        band = nexp(((bdepth - 0.45) / 0.12) ** 2) + 0.5 * nexp(((bdepth - 0.12) / 0.04) ** 2)
        les = soft(fine - d.u(0.9, 1.4, "sparsity"), 0.12) * band
        t1, t2 = t1 - 0.2 * les, t2 + 0.6 * les
    elif finding == 5:  # haemorrhage: compact T1-bright clot with a dark haemosiderin rim, mild oedema
        clot = soft(1 - rl + 0.1 * fine, 0.06)
        t1 = t1 + 0.3 * clot - 0.25 * line(rl - 1.05, 0.12)
        t2 = t2 + 0.2 * nexp((rl / 1.8) ** 2) - 0.3 * line(rl - 1.05, 0.12)
    t1 = (1 + 0.05 * coarse) * (0.85 * fat + 0.06 * bone + brain * t1)
    t2 = (1 + 0.05 * coarse) * (0.45 * fat + 0.03 * bone + brain * t2)
    return t1, t2 - t1


FINDINGS: dict[str, tuple[str, ...]] = {
    "chest_xray": CHEST,
    "dermoscopy": DERM,
    "fundus": FUNDUS,
    "histology": HISTO,
    "brain_mri": BRAIN,
}
RENDERERS: dict[str, Renderer] = {
    "chest_xray": chest_xray,
    "dermoscopy": dermoscopy,
    "fundus": fundus,
    "histology": histology,
    "brain_mri": brain_mri,
}
