"""The default experiment teaches something: short meta-training beats an untrained encoder on new classes.

MedSynth's fine taxonomy under the ``classes`` protocol (new classes within seen modalities) is what notebooks
03 and 04 show by default. If a short meta-training did not beat the untrained encoder and scratch on classes
it never saw, the notebooks would again be showing noise.
"""

from __future__ import annotations

import pytest
import torch

from medmeta_lib.data.sources import load_collection
from medmeta_lib.evaluation.episodic import evaluate_learners, paired_episode_difference
from medmeta_lib.learners import create_learner
from medmeta_lib.models import create_backbone
from medmeta_lib.studies.experiment_split import make_split
from medmeta_lib.training.meta_training import MetaTrainConfig, meta_train

# about 35 s (scratch fine-tunes a network per task); one torch thread, as the other training tests
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_short_meta_training_beats_untrained_encoder_and_scratch_on_new_classes():
    kw = {"n_per_class_site": 5, "taxonomy": "fine", "modalities": ["dermoscopy", "histology"], "image_size": 16}
    train, test = (load_collection("synthetic", split=s, seed=0, **kw) for s in ("train", "test"))
    split = make_split(train, test, split="classes", n_way=5, k_shot=5, q_query=10, seed=0)
    assert not set(split.test.classes) & set(split.train.classes)

    def protonet(seed: int):
        torch.manual_seed(seed)
        return create_learner("protonet", create_backbone("conv4", hidden=16), n_way=5)

    trained, untrained = protonet(0), protonet(0)  # the same initial weights
    torch.manual_seed(0)
    scratch = create_learner("scratch", create_backbone("conv4", hidden=16), n_way=5)
    meta_train(
        trained, split.train, config=MetaTrainConfig(steps=100, meta_batch=2, val_every=0, seed=0), progress=False
    )
    episodes = split.test.fixed(30, seed=1)
    res = evaluate_learners({"trained": trained, "untrained": untrained, "scratch": scratch}, episodes)
    for floor in ("untrained", "scratch"):  # paired over the same tasks: the lower 95% bound is above 0
        gain = paired_episode_difference(res["trained"], res[floor])
        assert gain["mean"] - gain["ci95"] > 0, (floor, gain, res)
