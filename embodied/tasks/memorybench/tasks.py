"""The three MemoryBench tasks: scene layout per variation, success conditions as RLBench codes
them (sam2act/libs/RLBench/rlbench/tasks/{reopen_drawer,put_block_back,rearrange_block}.py), a
strict variant of each (`task.strict`), and the scripted expert's keyframes.

Conditions follow rlbench/backend/conditions.py: a *trigger* latches the first time it holds
(JointConditionEx / JointTriggerCondition / DetectedTriggerCondition), a plain condition is the
current state (DetectedCondition, NothingGrasped); `ConditionSet(order_matters=True)` advances an
index through its conditions, `False` needs all at once.

When they are checked (memorybench/env.py, as the original; read in SAM2Act's vendored RLBench):
the success check (`task.success()`, i.e. `ConditionSet.met()` here) runs after every physics step
of the arm's motion (EndEffectorPoseViaPlanning.action's path loop, which stops the arm as soon as
it holds) and once more after the gripper action (TaskEnvironment.step: its result is the reward).
put_block_back and rearrange_block also poll every condition on every physics step of the gripper
action (their `step()` override, which Scene.step and Discrete._actuate call); reopen_drawer's
override is commented out in the original, so its ordered set is not polled while the gripper moves.

Randomisations (what the seed draws; memorybench/env.py): the variation (seed modulo the task's
count, unless `options["variation"]` names one) and the button's xy, uniform in the task's
`button_region`; nothing else is random (patches, blocks and cabinet sit where RLBench puts them).
Success (each task's `make_conditions`; the episode ends on it with reward 1, else after 25 keyframes):
- put_block_back (4 variations: which of 4 patches the block starts on): the block has left its
  patch and reached the centre, the button was pressed (> 3 mm), and now the block is back on its
  patch and nothing is grasped (any order).
- rearrange_block (2 variations: which of 2 patches holds the first block): the centre block has
  left the centre and now lies on the empty patch, the button was pressed, and the patch block has
  left its patch and now lies on the centre, nothing grasped (any order).
- reopen_drawer (3 variations: which drawer starts open): in order, the open drawer was closed
  (moved > 0.19 m), the button was pressed, and the drawer is open again (>= 0.15 m).

The original's loopholes: put_block_back and rearrange_block accept the final placement made
before the press (order does not matter); reopen_drawer accepts a drawer reopened before the press
(the press then finds it open) and looks only at the drawer that was open, so a policy that opens
all three after the press passes without remembering which; put_block_back accepts a block tried
on other patches first. Strict mode (`task.strict=true`, each task's `make_strict_conditions`) closes
them: an ordered set checked after every physics step (motion and gripper alike), in which the
button press counts only while the scene is in its memory phase (the first move done, the last not
begun), so the final step counts only after it; and violations, any of which fails the episode at
once, for touching what memory should rule out:
- reopen_drawer: in order, drawer i closed (moved > 0.19 m, as the original); the button pressed
  (> 3 mm) while drawer i is still closed; drawer i open again (>= 0.15 m). Violation: another
  drawer opened more than OTHER_DRAWER_TOUCH (5 cm) at any time.
- put_block_back: in order, the block left its patch; reached the centre; the button pressed while
  the block lies in the centre; the block back on its own patch with nothing grasped. Violation:
  the block resting (in the detection volume, i.e. not carried high) on any other patch at any time.
- rearrange_block: in order, the centre block left the centre; the button pressed while the centre
  block lies on the empty patch and the patch block still on its patch; the patch block in the centre,
  the centre block still on the empty patch, nothing grasped. Violation: after the press, the
  centre block (on the patch that memory says not to take from) leaves that patch.
"""
from __future__ import annotations

import numpy as np

from embodied.tasks.memorybench import scene as S
from embodied.tasks.memorybench.scene import Region, Scene, patch_region

BLOCK_COLOURS = ((0.95, 0.95, 0.95, 1), (0.6, 0.2, 0.75, 1))  # put_block_back's block / rearrange's block2
PATCH_COLOURS = ((0.9, 0.15, 0.15, 1), (0.15, 0.75, 0.2, 1), (0.15, 0.3, 0.9, 1), (0.95, 0.85, 0.1, 1))
CENTRE = np.array([0.05, 0.0])
CENTRE_COLOUR = (0.75, 0.75, 0.75, 1)
CARRY_Z = S.TABLE_Z + 0.18
GRASP_Z = S.TABLE_Z + S.BLOCK_HALF
PLACE_Z = S.TABLE_Z + S.BLOCK_HALF + 0.008
# closed fingertips ~30 mm into the button, past its 15 mm travel (the hand stalls on the bottomed
# cap): a press aimed 2 cm too high still pushes it > 3 mm (an 8 mm press failed at +5 mm)
PRESS_Z = S.TABLE_Z + S.BUTTON_TOP + 0.011 - 0.0365
ABOVE_BUTTON = 0.06
OPEN, CLOSED = 1.0, 0.0
OTHER_DRAWER_TOUCH = 0.05  # m: strict reopen_drawer fails once a drawer that was not open moves this far
# (the expert nudges a closed drawer by up to 1.2 cm; a drawer opened to look in moves >= 15 cm)
# Closing the middle or top drawer, the hand points 20 degrees forward of straight down (toward +x):
# straight down, the forearm met the face of the drawer above and stopped the push 1.5-2 cm short of
# shut, at the 0.19 m threshold. The bottom drawer's push is too near the robot's base to reach tilted.
_TILT = np.radians(20.0)
QUAT_PUSH_TILTED = S._quat_from_axes((np.cos(_TILT), 0, np.sin(_TILT)), (0, -1, 0), (np.sin(_TILT), 0, -np.cos(_TILT)))


# --- conditions ----------------------------------------------------------------------------------
class JointMoved:
    """The joint has moved more than `threshold` from its value at the start; latched (RLBench's
    JointConditionEx / JointTriggerCondition) unless `latch=False` (the displacement now)."""

    def __init__(self, read, threshold: float, latch: bool = True) -> None:
        self.read, self.threshold, self.latch = read, threshold, latch
        self.initial = read()
        self.done = False

    def met(self) -> bool:
        now = abs(self.read() - self.initial) > self.threshold
        if not self.latch:
            return now
        self.done = self.done or now
        return self.done


class Detected:
    """The object's position is in the region (negated: not in it); `trigger` latches it."""

    def __init__(self, position, region: Region, negated: bool = False, trigger: bool = False) -> None:
        self.position, self.region, self.negated, self.trigger = position, region, negated, trigger
        self.done = False

    def met(self) -> bool:
        now = self.region.contains(self.position()) != self.negated
        if self.trigger:
            self.done = self.done or now
            return self.done
        return now


class NothingGrasped:
    def __init__(self, scene: Scene, bodies: list[int]) -> None:
        self.scene, self.bodies = scene, bodies

    def met(self) -> bool:
        return not any(self.scene.grasped(b) for b in self.bodies)


class AllOf:
    """Every condition holds at this check (evaluated in order, stopping at the first that fails);
    `trigger` latches it the first time they all hold together."""

    def __init__(self, conditions: list, trigger: bool = False) -> None:
        self.conditions, self.trigger = conditions, trigger
        self.done = False

    def met(self) -> bool:
        if self.trigger and self.done:
            return True
        now = all(c.met() for c in self.conditions)
        self.done = self.done or (self.trigger and now)
        return now


class AnyOf:
    """Some condition holds at this check."""

    def __init__(self, conditions: list) -> None:
        self.conditions = conditions

    def met(self) -> bool:
        return any(c.met() for c in self.conditions)


class Violation:
    """Strict mode: `condition` must never hold (once `after`, a latched condition, is done, when
    given); latched, and it fails the episode (an RLBench fail condition)."""

    def __init__(self, name: str, condition, after=None) -> None:
        self.name, self.condition, self.after = name, condition, after
        self.done = False

    def met(self) -> bool:
        if not self.done and (self.after is None or self.after.done):
            self.done = self.condition.met()
        return self.done


class ConditionSet:
    def __init__(self, conditions: list, order_matters: bool) -> None:
        self.conditions, self.order_matters = conditions, order_matters
        self.index = 0

    def met(self) -> bool:
        if self.order_matters:
            while self.index < len(self.conditions) and self.conditions[self.index].met():
                self.index += 1
            return self.index >= len(self.conditions)
        results = [c.met() for c in self.conditions]  # every condition polled, so triggers latch
        return all(results)


def _keyframe(pos, quat, gripper: float, ignore_collisions: float) -> np.ndarray:
    parts = [np.asarray(pos, float), np.asarray(quat, float), [gripper, ignore_collisions]]
    return np.concatenate(parts).astype(np.float32)


def _sample_button(rng: np.random.Generator, lo, hi) -> np.ndarray:
    return np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])])


def _button_keyframes(xy) -> list[np.ndarray]:
    """Over the button, press it (fingers closed), come back up."""
    top = S.TABLE_Z + S.BUTTON_TOP + 0.011 + ABOVE_BUTTON
    return [_keyframe((xy[0], xy[1], top), S.QUAT_DOWN, CLOSED, 0),
            _keyframe((xy[0], xy[1], PRESS_Z), S.QUAT_DOWN, CLOSED, 1),
            _keyframe((xy[0], xy[1], top), S.QUAT_DOWN, CLOSED, 0)]


class MemoryBenchTask:
    """One task: `build` lays out the scene for a variation, `make_conditions` returns its success
    ConditionSet, `keyframe` is the scripted expert."""

    name = ""
    variations = 1
    instruction = ""
    poll_every_step = True
    button_region = ((0.0, 0.18), (0.12, 0.32))

    def build(self, scene: Scene, variation: int, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def make_conditions(self) -> ConditionSet:
        raise NotImplementedError

    def make_strict_conditions(self) -> tuple[ConditionSet, list[Violation]]:
        """Strict mode's ordered success set and its violations (module docstring)."""
        raise NotImplementedError

    def keyframe(self, k: int) -> np.ndarray | None:
        """The expert's keyframe k for the current state (None after the last)."""
        raise NotImplementedError

    def __init__(self, scene: Scene) -> None:
        self.scene = scene

    def _grasp_keyframes(self, xy, place_xy) -> list[np.ndarray]:
        """Pick the block at xy (over, down + close, up) and put it at place_xy (down + open)."""
        return [_keyframe((xy[0], xy[1], CARRY_Z), S.QUAT_DOWN, OPEN, 0),
                _keyframe((xy[0], xy[1], GRASP_Z), S.QUAT_DOWN, CLOSED, 1),
                _keyframe((xy[0], xy[1], CARRY_Z), S.QUAT_DOWN, CLOSED, 0),
                _keyframe((place_xy[0], place_xy[1], PLACE_Z), S.QUAT_DOWN, OPEN, 1)]


class PutBlockBack(MemoryBenchTask):
    name = "put_block_back"
    variations = 4
    instruction = ("move the block on the color patch to the center, then press the button, "
                   "and finally move the block back to where it was placed")
    patches = tuple(np.array([0.25, y]) for y in (-0.24, -0.08, 0.08, 0.24))

    def build(self, scene, variation, rng):
        self.variation = variation
        for xy, rgba in zip(self.patches, PATCH_COLOURS):
            scene.add_patch(xy, rgba)
        scene.add_patch(CENTRE, CENTRE_COLOUR)
        self.block = scene.add_block(self.patches[variation], BLOCK_COLOURS[0])
        scene.add_button(_sample_button(rng, *self.button_region))

    def make_conditions(self):
        s, home = self.scene, patch_region(self.patches[self.variation])
        block = lambda: s.body_position(self.block)  # noqa: E731
        return ConditionSet([Detected(block, home, negated=True, trigger=True),
                             Detected(block, patch_region(CENTRE), trigger=True),
                             JointMoved(s.button_depression, 0.003),
                             Detected(block, home),
                             NothingGrasped(s, [self.block])], order_matters=False)

    def make_strict_conditions(self):
        s, home = self.scene, patch_region(self.patches[self.variation])
        block = lambda: s.body_position(self.block)  # noqa: E731
        centre = patch_region(CENTRE)
        success = ConditionSet([Detected(block, home, negated=True, trigger=True),
                                Detected(block, centre, trigger=True),
                                AllOf([JointMoved(s.button_depression, 0.003, latch=False), Detected(block, centre)],
                                      trigger=True),
                                AllOf([Detected(block, home), NothingGrasped(s, [self.block])])], order_matters=True)
        others = [patch_region(p) for i, p in enumerate(self.patches) if i != self.variation]
        return success, [Violation("block on another patch", AnyOf([Detected(block, r) for r in others]))]

    def keyframe(self, k):
        s = self.scene
        block_xy = s.body_position(self.block)[:2]
        home = self.patches[self.variation]
        if k < 4:
            return self._grasp_keyframes(block_xy, CENTRE)[k]
        if k == 4:
            return _keyframe((CENTRE[0], CENTRE[1], CARRY_Z), S.QUAT_DOWN, CLOSED, 0)
        if k < 8:
            return _button_keyframes(s.button_xy)[k - 5]
        if k < 12:
            return self._grasp_keyframes(block_xy, home)[k - 8]
        return None


class RearrangeBlock(MemoryBenchTask):
    name = "rearrange_block"
    variations = 2
    instruction = ("Move the block not on the patch to the empty patch, then press the button, "
                   "then move the block that has not been moved off the patch")
    patches = (np.array([0.25, -0.15]), np.array([0.25, 0.15]))

    def build(self, scene, variation, rng):
        self.variation = variation
        for xy, rgba in zip(self.patches, PATCH_COLOURS):
            scene.add_patch(xy, rgba)
        scene.add_patch(CENTRE, CENTRE_COLOUR)
        self.patch_block = scene.add_block(self.patches[variation], BLOCK_COLOURS[0])
        self.centre_block = scene.add_block(CENTRE, BLOCK_COLOURS[1])
        scene.add_button(_sample_button(rng, *self.button_region))

    @property
    def dual(self) -> int:
        return len(self.patches) - self.variation - 1

    def make_conditions(self):
        s = self.scene
        pb_ = lambda: s.body_position(self.patch_block)  # noqa: E731
        cb_ = lambda: s.body_position(self.centre_block)  # noqa: E731
        centre = patch_region(CENTRE)
        return ConditionSet([Detected(cb_, centre, negated=True, trigger=True),
                             Detected(cb_, patch_region(self.patches[self.dual])),
                             JointMoved(s.button_depression, 0.003),
                             Detected(pb_, patch_region(self.patches[self.variation]), negated=True, trigger=True),
                             Detected(pb_, centre),
                             NothingGrasped(s, [self.patch_block, self.centre_block])], order_matters=False)

    def make_strict_conditions(self):
        s = self.scene
        pb_ = lambda: s.body_position(self.patch_block)  # noqa: E731
        cb_ = lambda: s.body_position(self.centre_block)  # noqa: E731
        centre, dual = patch_region(CENTRE), patch_region(self.patches[self.dual])
        own = patch_region(self.patches[self.variation])
        press = AllOf([JointMoved(s.button_depression, 0.003, latch=False), Detected(cb_, dual), Detected(pb_, own)],
                      trigger=True)
        success = ConditionSet([Detected(cb_, centre, negated=True, trigger=True),
                                press,
                                AllOf([Detected(pb_, centre), Detected(cb_, dual),
                                       NothingGrasped(s, [self.patch_block, self.centre_block])])], order_matters=True)
        return success, [Violation("moved block taken off the empty patch after the press",
                                   Detected(cb_, dual, negated=True), after=press)]

    def keyframe(self, k):
        s = self.scene
        if k < 4:
            return self._grasp_keyframes(s.body_position(self.centre_block)[:2], self.patches[self.dual])[k]
        if k == 4:
            d = self.patches[self.dual]
            return _keyframe((d[0], d[1], CARRY_Z), S.QUAT_DOWN, CLOSED, 0)
        if k < 8:
            return _button_keyframes(s.button_xy)[k - 5]
        if k < 12:
            return self._grasp_keyframes(s.body_position(self.patch_block)[:2], CENTRE)[k - 8]
        return None


class ReopenDrawer(MemoryBenchTask):
    name = "reopen_drawer"
    variations = 3
    instruction = "Close the opened drawer, push the button, and then open the previous drawer again"
    poll_every_step = False
    button_region = ((0.0, 0.22), (0.12, 0.34))
    reopened = 0.15  # the drawer counts as detected in the success sensor when opened this far (m)

    def build(self, scene, variation, rng):
        self.variation = variation
        scene.add_cabinet(open_drawer=variation)
        scene.add_button(_sample_button(rng, *self.button_region))

    def make_conditions(self):
        s, v = self.scene, self.variation
        return ConditionSet([JointMoved(lambda: s.drawer_opening(v), 0.19),
                             JointMoved(s.button_depression, 0.003),
                             self._reopened()], order_matters=True)

    def _reopened(self) -> "Detected":
        """Drawer i in the success sensor: opened at least `reopened` (not latched)."""
        s, v = self.scene, self.variation
        region = Region(np.array([-np.inf] * 3), np.array([-self.reopened + 1e-9, np.inf, np.inf]))
        return Detected(lambda: np.array([-s.drawer_opening(v), 0, 0]), region)

    def make_strict_conditions(self):
        s, v = self.scene, self.variation
        opening = lambda: s.drawer_opening(v)  # noqa: E731
        success = ConditionSet([JointMoved(opening, 0.19),
                                AllOf([JointMoved(s.button_depression, 0.003, latch=False),
                                       JointMoved(opening, 0.19, latch=False)], trigger=True),  # pressed while closed
                                self._reopened()],
                               order_matters=True)
        others = [JointMoved(lambda k=k: s.drawer_opening(k), OTHER_DRAWER_TOUCH, latch=False)
                  for k in range(self.variations) if k != v]
        return success, [Violation("another drawer opened", AnyOf(others))]

    def keyframe(self, k):
        s, v = self.scene, self.variation
        z = s.drawer_centre_z[v]
        closed_face = S.CABINET_X - S.DRAWER_PROUD
        handle_y = S.HANDLE_Y[v]
        side = 1.0 if handle_y > 0 else -1.0
        # the nominal targets sit mid-way in the window of offsets with which the expert still
        # succeeds (scanned per axis on every variation), so a policy a centimetre or two off succeeds
        push_y = handle_y + side * 0.075  # beside the handle, on the outer side (the handle's post is 1.5 cm in)
        push_z = z + 0.008  # the hand stays above the face's top edge, the wrist under the drawer above
        hook_x = closed_face - 0.06  # between the bar and the front when closed, nearer the bar
        push_quat = S.QUAT_DOWN if v == 0 else QUAT_PUSH_TILTED
        hook_z = z - 0.015
        above = 0.1
        if k == 0:  # over the gap in front of the open drawer's face
            fx = s.drawer_face_x(v) - 0.03
            return _keyframe((fx, push_y, push_z + above), push_quat, CLOSED, 0)
        if k == 1:
            fx = s.drawer_face_x(v) - 0.03
            return _keyframe((fx, push_y, push_z), push_quat, CLOSED, 1)
        if k == 2:  # push it shut
            return _keyframe((closed_face - 0.0065, push_y, push_z), push_quat, CLOSED, 1)
        if k == 3:  # back off low, under the bar of the drawer above
            return _keyframe((closed_face - 0.2, push_y, push_z), push_quat, CLOSED, 0)
        if k < 7:
            return _button_keyframes(s.button_xy)[k - 4]
        if k == 7:  # out in front, on the handle's side of the cabinet, at the height of the hook
            return _keyframe((hook_x - 0.2, side * 0.28, hook_z + above), S.QUAT_DOWN, CLOSED, 0)
        if k == 8:  # beside the cabinet, level with the gap between the bar and the front
            return _keyframe((hook_x, side * 0.28, hook_z + above), S.QUAT_DOWN, CLOSED, 0)
        if k == 9:  # slide in front of the drawers (under the handles above) to over the gap
            return _keyframe((hook_x, handle_y, hook_z + above), S.QUAT_DOWN, CLOSED, 0)
        if k == 10:
            return _keyframe((hook_x, handle_y, hook_z), S.QUAT_DOWN, CLOSED, 1)
        if k == 11:  # pull it open
            return _keyframe((hook_x - 0.24, handle_y, hook_z), S.QUAT_DOWN, CLOSED, 1)
        return None


TASK_CLASSES = {t.name: t for t in (ReopenDrawer, PutBlockBack, RearrangeBlock)}
