"""cue_probe: an agent kind (configs `agent.name=cue_probe`), built from the whole run config: here the
platform's Agent over the cue task's spaces, with the run's memory."""
from embodied.agents import build_agent
from embodied.tasks import make_env


def build_from_run_config(config):
    env = make_env(config["task"])
    return build_agent(env.observation_space, env.action_space, config["memory"]["name"],
                       {k: v for k, v in config["memory"].items() if k != "name"}, hidden=16)
