"""Determinism on CPU: the same seed gives the same metrics and parameters for every learner.

Each learner is built, meta-trained for a few steps and evaluated on fixed episodes, twice in this
process and once in a fresh process with another ``PYTHONHASHSEED`` (so no result may depend on set
or dict ordering, on state left by an earlier run, or on anything not derived from the seed). All
three must agree exactly, on one thread. What is *not* deterministic on a GPU is documented in
``RELIABILITY.md``.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medmeta_lib import EpisodeSampler, load_collection
from medmeta_lib.evaluation.episodic import evaluate_learner
from medmeta_lib.learners import list_learners
from medmeta_lib.studies.experiment import learner_defaults
from medmeta_lib.training.learner_io import build_learner
from medmeta_lib.training.meta_training import MetaTrainConfig, meta_train
from tests.reliability.support import REPO, cli_env

SEED = 11


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode() + t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def learner_metrics(seed: int = SEED) -> dict[str, dict[str, Any]]:
    """Meta-train (3 steps) and evaluate (6 fixed episodes) every registered learner from ``seed``."""
    col = load_collection("synthetic", image_size=16, n_per_class_site=2, seed=seed)
    train = EpisodeSampler(col, 2, 1, 2, classes=range(0, 20), same_modality=True, seed=seed)
    test = EpisodeSampler(col, 2, 1, 2, classes=range(20, col.num_classes), same_modality=True, seed=seed + 1)
    episodes = test.fixed(6, seed=seed + 2)
    out: dict[str, dict[str, Any]] = {}
    for name in list_learners():
        kw = {**learner_defaults(name, col), **({"inner_steps": 2, "eval_steps": 3} if "maml" in name else {})}
        learner = build_learner(name, backbone_kwargs={"hidden": 8}, n_way=2, learner_kwargs=kw, seed=seed)
        init = _digest(learner)
        res = meta_train(
            learner, train, config=MetaTrainConfig(steps=3, meta_batch=2, val_every=0, seed=seed), progress=False
        )
        ev = evaluate_learner(learner, episodes)
        out[name] = {
            "train": [(r.get("loss"), r.get("acc")) for r in res.history],
            "acc": ev.per_episode_acc,
            "auc": ev.auc_mean,
            "params": _digest(learner),
            "trained": learner.meta_trainable,
            "moved": _digest(learner) != init,
        }
    return out


@pytest.mark.slow
def test_same_seed_same_metrics_for_every_learner(one_thread: None) -> None:
    first = learner_metrics()
    assert set(first) == set(list_learners()) and len(first) >= 8
    # disturb every global generator between the runs: nothing may depend on them
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002
    torch.manual_seed(1)
    second = learner_metrics()
    assert json.dumps(second, sort_keys=True) == json.dumps(first, sort_keys=True)
    code = "import json; from tests.reliability.test_determinism import learner_metrics as m; print(json.dumps(m()))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=cli_env(PYTHONHASHSEED="12345"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.dumps(fresh, sort_keys=True) == json.dumps(json.loads(json.dumps(first)), sort_keys=True)
    # the runs really trained something: every meta-trainable learner took its 3 steps and moved from its start
    trained = {name: m for name, m in first.items() if m["trained"]}
    assert len(trained) >= 6
    assert all(len(m["train"]) == 3 and m["moved"] for m in trained.values()), {
        name: (len(m["train"]), m["moved"]) for name, m in trained.items()
    }


def test_another_seed_gives_other_results(one_thread: None) -> None:
    # guards the test above against comparing constants
    col = load_collection("synthetic", image_size=16, n_per_class_site=2, seed=SEED)
    a = build_learner("protonet", backbone_kwargs={"hidden": 8}, n_way=2, seed=1)
    b = build_learner("protonet", backbone_kwargs={"hidden": 8}, n_way=2, seed=2)
    assert _digest(a) != _digest(b)
    ep1, ep2 = EpisodeSampler(col, 2, 1, 2, seed=1).sample(), EpisodeSampler(col, 2, 1, 2, seed=2).sample()
    assert not torch.equal(ep1.query_idx, ep2.query_idx)


def test_simclr_checkpoint_rng_state_is_a_function_of_the_seed(tmp_path: Path, one_thread: None) -> None:
    from medmeta_lib.ssl.simclr import pretrain_simclr
    from medmeta_lib.ssl.simclr_config import SimCLRConfig
    from medmeta_lib.training.checkpoint import load_checkpoint

    col = load_collection("synthetic", image_size=16, n_per_class_site=1, seed=0)
    cfg = SimCLRConfig(epochs=1, batch_size=16, max_steps=1, seed=0)
    for run, entropy in (("a", 101), ("b", 202)):  # what two fresh processes start with
        torch.manual_seed(entropy)
        random.seed(entropy)
        np.random.seed(entropy)  # noqa: NPY002
        pretrain_simclr(
            col, backbone_kwargs={"hidden": 8}, config=cfg, out=tmp_path / f"{run}.safetensors", progress=False
        )
    a, b = (load_checkpoint(tmp_path / f"{r}.safetensors").tensors for r in "ab")
    assert torch.equal(a["encoder.features.0.weight"], b["encoder.features.0.weight"])  # training itself agrees
    assert all(torch.equal(a[k], b[k]) for k in ("rng.torch", "rng.python.state", "rng.numpy.keys"))
