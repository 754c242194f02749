"""Episode logic: registered gymnasium tasks with habitat-style measures."""
from embodied.tasks.config import (SENSORS, BalletConfig, FastMapConfig, GoatConfig, HouseholdConfig, NavConfig,
                                   RoomBalletConfig, TaskConfig, register_configs)
from embodied.tasks.registry import (DEMO_SOURCES, MEASURES, STEP_SELECTORS, TASK_PREFIXES, TASKS, DemoSource, EpisodeOverError,
                                     ObservationError, TaskEnv, demo_source, make_env, register_demo_source,
                                     register_measure, register_step_selector, register_task, task_class)
from embodied.tasks import measures as _measures  # noqa: F401  (registers measures)
from embodied.tasks import nav as _nav  # noqa: F401  (registers nav tasks)
from embodied.tasks import goat as _goat  # noqa: F401  (registers nav/goat)
from embodied.tasks import ballet as _ballet  # noqa: F401  (registers ballet tasks)
from embodied.tasks import room_ballet as _room_ballet  # noqa: F401  (registers room_ballet tasks)
from embodied.tasks import fastmap as _fastmap  # noqa: F401  (registers fastmap tasks)
from embodied.tasks import memorybench as _memorybench  # noqa: F401  (registers memorybench tasks)
from embodied.tasks import household as _household  # noqa: F401  (registers household tasks)
from embodied.tasks import external as _external  # noqa: F401  (gym:<id>: gymnasium envs as tasks)
from embodied.tasks.nav import MEASURE_NAMES, EpisodeError, NavEnv
from embodied.config import load_plugins

load_plugins("tasks")  # installed packages' tasks (entry point group embodied.tasks)


def oracle_action(env) -> int:
    """The shortest-path oracle's action for a single (unwrapped) env."""
    return env.unwrapped.oracle_action()


__all__ = ["SENSORS", "TaskConfig", "NavConfig", "GoatConfig", "BalletConfig", "RoomBalletConfig", "FastMapConfig", "HouseholdConfig", "register_configs", "MEASURES", "TASKS", "TASK_PREFIXES", "task_class", "make_env", "register_measure", "register_task",
           "STEP_SELECTORS", "register_step_selector", "DEMO_SOURCES", "DemoSource", "demo_source", "register_demo_source", "TaskEnv", "EpisodeOverError", "ObservationError",
           "MEASURE_NAMES", "EpisodeError", "NavEnv", "oracle_action"]
