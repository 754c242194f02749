"""cue/recall: a cue (one of two) is shown at the first step, then `delay` blank steps; the last
action must name the cue. Success 1 when it does; a memoryless agent is right half the time."""
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from embodied.config import check
from embodied.tasks import TaskConfig, TaskEnv, register_task


@dataclass
class CueConfig(TaskConfig):
    """cue/recall: the delay between the cue and the answer."""

    family = "cue"
    name: str = "cue/recall"
    """cue/recall."""
    delay: int = 3
    """Blank steps between the cue and the answer step."""

    def validate(self):
        super().validate()
        check(self.delay >= 0, "task.delay", f"{self.delay}; allowed: >= 0")
        return self


@register_task("cue/recall")
class CueRecallEnv(TaskEnv):
    config_class = CueConfig

    def __init__(self, cfg: CueConfig):
        self.cfg = cfg
        # state: cue one-hot (shown at step 0 only), answer-step flag
        self.observation_space = spaces.Dict({"state": spaces.Box(0.0, 1.0, (3,), np.float32)})
        self.action_space = spaces.Discrete(2)

    def _obs(self):
        state = np.zeros(3, np.float32)
        if self.t == 0:
            state[self.cue] = 1.0
        state[2] = float(self.t == self.cfg.delay + 1)
        return {"state": state}

    def _reset(self, seed, options):
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def _step(self, action):
        self.t += 1
        if self.t <= self.cfg.delay + 1:
            return self._obs(), 0.0, False, False, {}
        success = float(int(action) == self.cue)
        return self._obs(), success, True, False, {"success": success, "cue": float(self.cue)}
