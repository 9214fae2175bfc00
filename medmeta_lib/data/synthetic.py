"""MedSynth: procedural multi-modality, multi-site medical images, the workbench's offline default.

Five modalities: chest radiograph, dermoscopy, fundus photograph, histology (H&E) patch and brain MRI
slice, all greyscale with one channel. Two class taxonomies (``synth_classes``): ``"coarse"``, six
findings per modality (30 classes), and ``"fine"``, the findings split by side, size or severity (96
classes, 16-24 per modality: enough for disjoint meta-train / validation / test classes within every
modality). Every image belongs to a patient (a 32-bit key from the seed, split, class, site and index)
and a site ("hospital_A", ...). The patient's anatomy is rendered in continuous coordinates
(``synth_anatomy``), then acquired by the site's scanner (``synth_sites``): contrast curve, noise, blur,
resolution, bias field, rotation, collimation and burnt-in markers. Keys are stored per image in
``collection.meta["medsynth_key"]``, so :meth:`MedSynth.restyle` can re-acquire the same patients at
other sites (contrastive positives that differ only in acquisition).

Why procedural rather than a GAN or a dataset: no download, bit-identical for a seed, thousands of images
per second on a CPU, and the site shift is a known, controllable factor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.synth_anatomy import FINDINGS, RENDERERS
from medmeta_lib.data.synth_classes import FINE
from medmeta_lib.data.synth_fields import hash_keys
from medmeta_lib.data.synth_sites import acquire

__all__ = ["MedSynth"]

_SPLITS = {"train": 0, "val": 1, "test": 2}
_CHUNK_PIXELS = 1 << 18  # pixels per map in one vectorised call (1 MiB of float32; 2^17 and 2^19 measured slower)
_BLOCK = 2048  # images whose physical maps are held at once
_MAX_THREADS = 2  # intra-op threads while rendering (see _batch_multiple)
META_KEY = "medsynth_key"
TAXONOMIES = ("coarse", "fine")
_FINE_CODE = 1000  # fine class j of a modality hashes as finding 1000 + j: its own patients
# a class as rendered: (modality, finding index, (hash code, variant or None))
_ClassRow = tuple[str, int, tuple[int, "dict[str, Any] | None"]]


def _check_int(name: str, value: Any, lo: int, hi: int | None = None, hint: str = "") -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < lo
        or (hi is not None and value > hi)
    ):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"MedSynth: {name} must be an integer {rng}, got {value!r}{hint}")
    return int(value)


class MedSynth:
    """Generator of synthetic, multi-site medical image collections.

    Args:
        modalities: which modalities to include (default all of ``MedSynth.MODALITIES``), in that order.
        n_sites: number of sites (hospitals), 1..26. Site ``k`` has the same scanners in every split and
            for every ``n_sites``; sites 0-3 are distinct archetypes, later ones blend them.
        taxonomy: ``"coarse"`` (six findings per modality, ``"chest_xray/nodule"``) or ``"fine"``
            (findings by side and size or severity, ``"chest_xray/nodule-left-small"``); see ``synth_classes``.

    Raises:
        ValueError: for an unknown or repeated modality, ``n_sites`` outside 1..26 or an unknown taxonomy.

    Example:
        >>> synth = MedSynth(modalities=["chest_xray", "fundus"], n_sites=4)
        >>> col = synth.generate(image_size=28, split="train", seed=0, n_per_class_site=2)
        >>> col.num_classes, col.num_sites, len(col), col.class_names[1]
        (12, 4, 96, 'chest_xray/pneumonia')
        >>> synth.restyle(col, [0, 1], sites=[2, 3]).shape
        torch.Size([2, 1, 28, 28])
    """

    INIT_KEYS: ClassVar[frozenset[str]] = frozenset({"modalities", "n_sites", "taxonomy"})
    MODALITIES: ClassVar[tuple[str, ...]] = tuple(FINDINGS)
    MAX_SITES: ClassVar[int] = 26

    def __init__(self, *, modalities: Sequence[str] | None = None, n_sites: int = 4, taxonomy: str = "coarse") -> None:
        if modalities is None:
            mods = self.MODALITIES
        else:
            mods = (modalities,) if isinstance(modalities, str) else tuple(modalities)
            unknown = [m for m in mods if m not in self.MODALITIES]
            if unknown or not mods or len(set(mods)) != len(mods):
                raise ValueError(
                    f"MedSynth: modalities must be distinct names from {self.MODALITIES}, got {list(mods)!r}"
                    + (f" (unknown: {unknown})" if unknown else "")
                )
        self.modalities: tuple[str, ...] = tuple(mods)
        self.n_sites = _check_int("n_sites", n_sites, 1, self.MAX_SITES)
        if taxonomy not in TAXONOMIES:
            raise ValueError(f"MedSynth: taxonomy must be one of {TAXONOMIES}, got {taxonomy!r}")
        self.taxonomy = taxonomy
        names = {m: FINDINGS[m] if taxonomy == "coarse" else tuple(n for n, _, _ in FINE[m]) for m in self.modalities}
        self.class_names = tuple(f"{m}/{f}" for m in self.modalities for f in names[m])
        self.class_modalities = tuple(m for m in self.modalities for _ in names[m])
        self.site_names = tuple(f"hospital_{chr(ord('A') + i)}" for i in range(self.n_sites))

    def __repr__(self) -> str:
        return f"MedSynth(modalities={list(self.modalities)!r}, n_sites={self.n_sites}, taxonomy={self.taxonomy!r})"

    def generate(
        self, *, image_size: int = 28, split: str = "train", seed: int = 0, n_per_class_site: int = 20
    ) -> ImageCollection:
        """Render ``n_per_class_site`` new patients for every (class, site).

        Args:
            image_size: side length in pixels (>= 8; 28 and 64 are the usual sizes). The same seed gives
                the same patients at every size.
            split: ``"train"``, ``"val"`` or ``"test"``: different patients, same classes and sites.
            seed: non-negative integer; the same arguments give bit-identical images.
            n_per_class_site: images per (class, site).

        Returns:
            An :class:`ImageCollection` ordered by class, then site, then index, with
            ``meta["medsynth_key"]`` (one int64 patient key per image, used by :meth:`restyle`).

        Raises:
            ValueError: naming the bad argument.

        Example:
            >>> col = MedSynth(n_sites=4).generate(image_size=28, n_per_class_site=1)
            >>> tuple(col.images.shape), col.site_class_counts().min().item()
            ((120, 1, 28, 28), 1)
        """
        size = _check_int("image_size", image_size, 8, hint="; use 28 or 64 for MedMNIST-like images")
        if split not in _SPLITS:
            raise ValueError(f"MedSynth: split must be one of {tuple(_SPLITS)}, got {split!r}")
        seed = _check_int("seed", seed, 0, 2**63 - 1)
        n = _check_int("n_per_class_site", n_per_class_site, 1, hint="; ask for at least one image per (class, site)")
        n_cls, n_sites = len(self.class_names), self.n_sites
        labels = torch.arange(n_cls).repeat_interleave(n_sites * n)
        sites = torch.arange(n_sites).repeat_interleave(n).repeat(n_cls)
        index = torch.arange(n).repeat(n_cls * n_sites)
        table = self._class_table(self.class_names)
        mod_code = torch.tensor([self.MODALITIES.index(m) for m, _, _ in table])[labels]
        finding = torch.tensor([code for _, _, (code, _) in table])[labels]
        keys = hash_keys(seed & 0xFFFFFFFF, seed >> 32, _SPLITS[split], mod_code, finding, sites, index)
        images = self._render(keys, labels, sites, table, size)
        return ImageCollection(
            images=images,
            labels=labels,
            class_names=self.class_names,
            sites=sites,
            site_names=self.site_names,
            source="synthetic",
            class_modalities=self.class_modalities,
            split=split,
            meta={
                META_KEY: keys,
                "medsynth": {
                    "modalities": list(self.modalities),
                    "n_sites": n_sites,
                    "taxonomy": self.taxonomy,
                    "seed": seed,
                    "n_per_class_site": n,
                },
            },
        )

    def restyle(
        self,
        collection: ImageCollection,
        indices: Sequence[int] | torch.Tensor | np.ndarray,
        sites: Sequence[int] | torch.Tensor | np.ndarray | int,
    ) -> torch.Tensor:
        """Re-acquire the same patients as images ``indices`` of ``collection`` at ``sites``.

        The anatomy (patient, lesion, texture) is unchanged; only the acquisition (scanner, exposure,
        noise, positioning, markers) is that of the target site. Restyling an image to its own site
        reproduces it exactly. Works on subsets, since the patient keys travel in ``collection.meta``.

        Args:
            collection: a MedSynth collection (or a subset of one).
            indices: positions in ``collection``.
            sites: one target site id per index (or one int for all), in ``0 .. n_sites - 1``.

        Returns:
            ``(len(indices), 1, H, W)`` float32 images in ``[0, 1]``.

        Raises:
            ValueError: for a collection without MedSynth keys, an index or site out of range, or a
                length mismatch.

        Example:
            >>> synth = MedSynth(modalities=["chest_xray"])
            >>> col = synth.generate(n_per_class_site=1)
            >>> bool((synth.restyle(col, [0], [int(col.sites[0])]) == col.images[:1]).all())
            True
        """
        keys_all = collection.meta.get(META_KEY)
        if not isinstance(keys_all, torch.Tensor) or keys_all.shape != (len(collection),):
            raise ValueError(
                f"MedSynth.restyle: collection {collection.source!r} has no per-image meta[{META_KEY!r}]; "
                "restyle only works on collections made by MedSynth.generate (or their subsets)"
            )
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long).reshape(-1)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= len(collection):
            raise ValueError(f"MedSynth.restyle: indices must be non-empty and lie in 0..{len(collection) - 1}")
        site_t = torch.as_tensor(np.asarray(sites), dtype=torch.long).reshape(-1)
        if site_t.numel() == 1:
            site_t = site_t.expand(idx.numel())
        if site_t.numel() != idx.numel():
            raise ValueError(
                f"MedSynth.restyle: sites needs one site per index ({idx.numel()}) or a single site, "
                f"got {site_t.numel()}"
            )
        if int(site_t.min()) < 0 or int(site_t.max()) >= self.n_sites:
            raise ValueError(f"MedSynth.restyle: sites must lie in 0..{self.n_sites - 1} (this MedSynth's n_sites)")
        table = self._class_table(collection.class_names)
        return self._render(keys_all[idx], collection.labels[idx], site_t.contiguous(), table, collection.image_size)

    # ------------------------------------------------------------------------------ internals
    @classmethod
    def _class_table(cls, class_names: Sequence[str]) -> list[_ClassRow]:
        """Per class: (modality, finding index, (hash code, variant)); coarse and fine names are both known."""
        table: list[_ClassRow] = []
        for name in class_names:
            mod, _, finding = name.partition("/")
            fine = {n: (j, f, v) for j, (n, f, v) in enumerate(FINE.get(mod, ()))}
            if mod in FINDINGS and finding in FINDINGS[mod]:
                f = FINDINGS[mod].index(finding)
                table.append((mod, f, (f, None)))
            elif finding in fine:
                j, f, variant = fine[finding]
                table.append((mod, f, (_FINE_CODE + j, variant)))
            else:
                raise ValueError(f"MedSynth: class {name!r} is not a MedSynth class ('<modality>/<finding>')")
        return table

    def _render(
        self, keys: torch.Tensor, labels: torch.Tensor, sites: torch.Tensor, table: list[_ClassRow], size: int
    ) -> torch.Tensor:
        # Anatomy is rendered per finding (one renderer call covers every site), acquisition per site.
        # Images are processed sorted by (modality, finding, site), a modality in blocks so that memory
        # stays bounded, and each acquired batch is written straight to its place in the caller's order.
        lab, st = labels.numpy(), sites.numpy()
        mod_of = np.array([self.MODALITIES.index(m) for m, _, _ in table])[lab]
        # one render group per (finding, variant): the class's code (coarse: the finding itself)
        find_of = np.array([code for _, _, (code, _) in table])[lab]
        how = {code: (f, variant) for _, f, (code, variant) in table}
        with _render_threads():
            return self._render_sorted(keys, mod_of, find_of, st, size, how)

    def _render_sorted(
        self,
        keys: torch.Tensor,
        mod_of: np.ndarray,
        find_of: np.ndarray,
        st: np.ndarray,
        size: int,
        how: dict[int, tuple[int, dict[str, Any] | None]],
    ) -> torch.Tensor:
        order = np.lexsort((st, find_of, mod_of))
        out = torch.empty(len(keys), 1, size, size)
        m = _batch_multiple(size)
        chunk = m * max(1, _CHUNK_PIXELS // (size * size * m))
        for mi in np.unique(mod_of):
            modality, members = self.MODALITIES[mi], np.nonzero(mod_of[order] == mi)[0]
            render = RENDERERS[modality]
            for b0 in range(members[0], members[-1] + 1, _BLOCK):
                blk = np.arange(b0, min(b0 + _BLOCK, members[-1] + 1))
                k_blk, f_blk, s_blk = keys[order[blk]], find_of[order[blk]], st[order[blk]]
                primary, secondary = torch.empty(len(blk), size, size), torch.empty(len(blk), size, size)
                for f in np.unique(f_blk):
                    where = np.nonzero(f_blk == f)[0]  # contiguous: the block is sorted by finding
                    for r0 in range(where[0], where[-1] + 1, chunk):
                        r1 = min(r0 + chunk, where[-1] + 1)
                        finding, variant = how[int(f)]
                        a, b = render(_pad(k_blk[r0:r1], m), finding, size, variant)
                        primary[r0:r1], secondary[r0:r1] = a[: r1 - r0], b[: r1 - r0]
                for s in np.unique(s_blk):
                    sel_all = np.nonzero(s_blk == s)[0]
                    for i in range(0, len(sel_all), chunk):
                        t = torch.from_numpy(sel_all[i : i + chunk])
                        tp = _pad(t, m)  # padding the index pads the maps and keys without a copy
                        prim, sec = primary.index_select(0, tp), secondary.index_select(0, tp)
                        img = acquire(prim, sec, modality, int(s), k_blk[tp])
                        out.index_copy_(0, torch.from_numpy(order[blk[t.numpy()]]), img[: len(t)])
        return out


@contextmanager
def _render_threads() -> Iterator[None]:
    # Rendering uses at most two intra-op threads (see _batch_multiple); the caller's setting is restored.
    before = torch.get_num_threads()
    if before > _MAX_THREADS:
        torch.set_num_threads(_MAX_THREADS)
    try:
        yield
    finally:
        if before > _MAX_THREADS:
            torch.set_num_threads(before)


def _batch_multiple(size: int) -> int:
    # Why batches are padded: torch's CPU kernels run most elements through SIMD code and the last
    # < 32 elements of a thread's range through scalar code, and a few functions (sigmoid, exp, pow,
    # cos, erfinv, fused multiply-adds) round differently in the two; + - * / sqrt min max are exact in
    # both. torch splits an op over min(threads, numel / 32768) threads in equal ranges. With batches
    # of 32k images, one thread's range is whole images and a multiple of 32 elements. With two
    # threads each range is 16k images: whole images, and a multiple of 32 elements when every
    # per-image element count is even, which holds for even sides (maps, rows, padded blur copies; the
    # marker windows use only exact operations); odd sides need 64k images. So an image's pixels
    # never depend on the batch it was rendered in, and restyle to its own site reproduces it bit for bit.
    two_threads = min(torch.get_num_threads(), _MAX_THREADS) > 1
    return 64 if two_threads and size % 2 else 32


def _pad(x: torch.Tensor, m: int) -> torch.Tensor:
    n = len(x)
    extra = -n % m
    return x if extra == 0 else torch.cat([x, x[-1:].expand(extra, *x.shape[1:])])
