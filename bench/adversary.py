"""A misbehaving site for the attack benchmark (bench/robust_attacks.py): the platform's own
client agent, enrolled and trained like any other, whose update is tampered with before it
leaves. Never part of the platform: `python -m adversary` with bench/ on the path.

The attack is read from the file FEDSILO_BENCH_ATTACK_FILE names (JSON {"attack": ...}) at
every round, so one enrolled attacker serves every run of the campaign:

- none: honest.
- sign_flip: -4 x its honest update.
- scaling: 100 x its honest update.
- label_flip: trains honestly on its data with every binary label flipped.
- gaussian: Gaussian noise whose norm is 10 x its honest update's.
- alie: "a little is enough" (Baruch et al. 2019): each coordinate at mean - z * std of the
  honest updates, z = Phi^-1((n - s) / n) with s = floor(n / 2 + 1) - f, n sites and f = 1
  attacker. The attacker is omniscient, the paper's worst case: it trains every honest site's
  update itself, from the site configurations FEDSILO_BENCH_PEERS lists (paths, comma
  separated), with the seeds the sites use.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from fedsilo.client.agent import ClientAgent
from fedsilo.client.site import SiteDatasets, training_settings
from fedsilo.data import SiteConfig, TabularData
from fedsilo.jobs import JobSpec
from fedsilo.learning import flatten, train_local
from fedsilo.v1 import scheduler_pb2

ATTACKS = ("none", "sign_flip", "scaling", "label_flip", "gaussian", "alie")


def current_attack() -> str:
    attack = json.loads(Path(os.environ["FEDSILO_BENCH_ATTACK_FILE"]).read_text())["attack"]
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; one of {', '.join(ATTACKS)}")
    return str(attack)


def alie_z(sites: int, attackers: int = 1) -> float:
    supporters = math.floor(sites / 2 + 1) - attackers
    return float(norm.ppf((sites - supporters) / sites))


class AttackingAgent(ClientAgent):
    _job: JobSpec | None = None

    def dataset(self, job: JobSpec) -> TabularData:
        data = super().dataset(job)
        if current_attack() != "label_flip":
            return data
        if data.task.name != "binary":
            raise ValueError(f"label_flip flips binary labels; this job's task is {data.task.name}")
        return dataclasses.replace(data, y_train=1 - data.y_train)

    def _train(self, task: scheduler_pb2.Task, spec: JobSpec) -> None:
        self._job = spec
        super()._train(task, spec)

    def _submit(
        self, task: scheduler_pb2.Task, vector: np.ndarray, num_examples: int, **fields: Any
    ) -> None:
        if task.kind == scheduler_pb2.TASK_KIND_TRAIN and self._job is not None:
            vector = self._tampered(task, self._job, vector)
        super()._submit(task, vector, num_examples, **fields)

    def _tampered(self, task: scheduler_pb2.Task, spec: JobSpec, honest: np.ndarray) -> np.ndarray:
        attack = current_attack()
        rng = np.random.default_rng(task.round)
        if attack == "sign_flip":
            return -4.0 * honest
        if attack == "scaling":
            return 100.0 * honest
        if attack == "gaussian":
            noise = rng.standard_normal(honest.size)
            return (noise * 10.0 * np.linalg.norm(honest) / np.linalg.norm(noise)).astype("<f4")
        if attack == "alie":
            updates = np.stack([honest, *self._peer_updates(task, spec)])
            z = alie_z(len(updates))
            return (updates.mean(axis=0) - z * updates.std(axis=0)).astype("<f4")
        return honest

    def _peer_updates(self, task: scheduler_pb2.Task, spec: JobSpec) -> list[np.ndarray]:
        """Every honest site's update of this round, trained here as the site trains it."""
        start = self._global_vector(task.model_version)
        out = []
        for path in filter(None, os.environ.get("FEDSILO_BENCH_PEERS", "").split(",")):
            config = SiteConfig.load(Path(path))
            data = SiteDatasets(config).for_job(spec)
            model = self._model_for(spec, data, task)
            train_local(model, data, **training_settings(spec, task.round, config.site))
            out.append(flatten(model) - start)
        return out


if __name__ == "__main__":
    from fedsilo_services.client.__main__ import main

    main(AttackingAgent)
