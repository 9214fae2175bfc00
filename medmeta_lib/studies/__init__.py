"""Studies: experiments composed from training and evaluation, and what the notebooks' figures compute.

* :mod:`~medmeta_lib.studies.experiment_split` — which classes, modalities or hospitals a run trains,
  validates and tests on (and a check that a checkpoint is never tested on its training classes);
* :mod:`~medmeta_lib.studies.experiment` — train a set of learners on a split and score them;
* :mod:`~medmeta_lib.studies.sites` — leave-one-site-out, site-transfer maps and the site-invariant
  pretraining remedy (a new hospital);
* :mod:`~medmeta_lib.studies.adaptation` — adaptation curves, data efficiency, embedding trajectories;
* :mod:`~medmeta_lib.studies.saliency` — saliency maps before and after adaptation;
* :mod:`~medmeta_lib.studies.weights` — what a weight-generating learner's second network wrote;
* :mod:`~medmeta_lib.studies.medsynth_metatrain` — a learner meta-trained on MedSynth tasks from a
  pretrained encoder (the meta-train stage of pretrain → meta-train), the MedSynth images it uses, and
  the same on tasks from any grouped collection (``metatrain_on_tasks``);
* :mod:`~medmeta_lib.studies.fewshot` — the best few-shot recipe on a user's dataset, beside its baselines
  (``medmeta fewshot``); :mod:`~medmeta_lib.studies.fewshot_checks` — its data and settings checked before
  anything is trained;
* :mod:`~medmeta_lib.studies.fewshot_recipe` — that recipe saved as one model, adapted to labelled images and
  applied to new ones (``FewShotRecipe``).

These modules compute; :mod:`medmeta_lib.viz` draws.

Example:
    >>> from medmeta_lib.studies import SPLITS
    >>> "classes" in SPLITS
    True
"""

from __future__ import annotations

from medmeta_lib.studies.adaptation import (
    adaptation_curves,
    data_efficiency,
    embedding_trajectory,
    prototype_alignment,
)
from medmeta_lib.studies.experiment import evaluate_split, learner_defaults, obtain_learners, train_learners
from medmeta_lib.studies.experiment_split import (
    SPLITS,
    ExperimentSplit,
    check_split_matches,
    make_split,
    obtain_split,
)
from medmeta_lib.studies.fewshot import MIX_HEAD, PROBE_RECIPE, RECIPE, fewshot_study
from medmeta_lib.studies.fewshot_checks import check_fewshot_data, check_fewshot_settings
from medmeta_lib.studies.fewshot_recipe import RECIPE_FILE, FewShotRecipe
from medmeta_lib.studies.medsynth_metatrain import (
    MEDSYNTH_TASKS,
    medsynth_train_split,
    metatrain_on_medsynth,
    metatrain_on_tasks,
)
from medmeta_lib.studies.saliency import SALIENCY_METHODS, gradient_x_input, occlusion_map, saliency_before_after
from medmeta_lib.studies.sites import (
    leave_one_site_out,
    site_invariance_remedy,
    site_remedy_summary,
    site_transfer_matrix,
)
from medmeta_lib.studies.weights import generated_head, writes_weights

__all__ = [
    "MEDSYNTH_TASKS",
    "MIX_HEAD",
    "PROBE_RECIPE",
    "RECIPE",
    "RECIPE_FILE",
    "SALIENCY_METHODS",
    "SPLITS",
    "ExperimentSplit",
    "FewShotRecipe",
    "adaptation_curves",
    "check_fewshot_data",
    "check_fewshot_settings",
    "check_split_matches",
    "data_efficiency",
    "embedding_trajectory",
    "evaluate_split",
    "fewshot_study",
    "generated_head",
    "gradient_x_input",
    "learner_defaults",
    "leave_one_site_out",
    "make_split",
    "medsynth_train_split",
    "metatrain_on_medsynth",
    "metatrain_on_tasks",
    "obtain_learners",
    "obtain_split",
    "occlusion_map",
    "prototype_alignment",
    "saliency_before_after",
    "site_invariance_remedy",
    "site_remedy_summary",
    "site_transfer_matrix",
    "train_learners",
    "writes_weights",
]
